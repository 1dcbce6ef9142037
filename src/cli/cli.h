/*
 * The edgeserve command line: dispatch.c dispatches argv[1] through a table of
 * subcommands, one file each (run.c, later serve.c, bench.c ...).
 *
 * Every subcommand's entry point gets argv starting at its own name
 * (argv[0] == "run") and returns the process exit status.
 */
#ifndef ES_CLI_CLI_H
#define ES_CLI_CLI_H

/* Exit statuses shared by every subcommand. */
enum {
	ES_CLI_EXIT_OK = 0,
	ES_CLI_EXIT_FAILURE = 1, /* the work failed: bad model, bad input, run error */
	ES_CLI_EXIT_USAGE = 2,   /* the command line was wrong */
};

/* Runs the subcommand argv[1] names (usage, --help and --version too) and
 * returns the process exit status. */
int es_cli_dispatch(int argc, char **argv);

/* `edgeserve run`: one-shot inference and benchmark of one model. */
int es_cli_run(int argc, char **argv);

/* `edgeserve serve`: the model server (KServe v2, TF-Serving REST, metrics). */
int es_cli_serve(int argc, char **argv);

/* `edgeserve bench`: closed-loop load generator against a KServe v2 server. */
int es_cli_bench(int argc, char **argv);

#endif
