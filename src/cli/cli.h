/*
 * The edgeserve command line: dispatch.c dispatches argv[1] through a table of
 * subcommands, one file each (run.c, later serve.c, bench.c ...).
 *
 * Every subcommand's entry point gets argv starting at its own name
 * (argv[0] == "run") and returns the process exit status.
 */
#ifndef ES_CLI_CLI_H
#define ES_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>

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

/* ---- option scanning (opts.c) ------------------------------------------ */

/* One option a subcommand accepts, spelled as typed ("--iters", "-h"). */
typedef struct es_cli_flag {
	const char *name;
	bool takes_value;   /* needs VALUE: "--name=VALUE" or the next argument */
	bool optional_bool; /* with takes_value: may also stand alone, meaning
			     * "true", or be followed by a boolean word
			     * (es_cli_parse_bool), which is then its value */
} es_cli_flag;

/* How arguments are told apart and how mistakes are named. */
typedef enum es_cli_opts_style {
	/* run, bench: an argument starting with '-' (other than "-") is an
	 * option, "--" ends the options, an unknown option is named in full,
	 * "=VALUE" on a flag that takes none is its own error. */
	ES_CLI_OPTS_GNU,
	/* serve, after OpenVINO Model Server: a flag taking no value must be
	 * typed exactly, any other argument not starting with "--" is
	 * positional, there is no "--" separator, and an unknown option is
	 * named without its "=VALUE". */
	ES_CLI_OPTS_OVMS,
} es_cli_opts_style;

/* The subcommand's own usage_error: prints the message and returns the exit
 * status. */
typedef int es_cli_usage_fn(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* Walks argv[1..argc-1]. Set it up with es_cli_opts_init; the fields are
 * private to opts.c. */
typedef struct es_cli_opts {
	int argc;
	char **argv;
	int next; /* index of the next argument to look at */
	const es_cli_flag *flags;
	size_t n_flags;
	es_cli_opts_style style;
	es_cli_usage_fn *usage_error;
	bool only_positional; /* "--" was seen */
	int exit_status;      /* what usage_error returned, after ES_CLI_OPT_ERROR */
} es_cli_opts;

enum {
	ES_CLI_OPT_END = -1,        /* no arguments left */
	ES_CLI_OPT_POSITIONAL = -2, /* *value is the argument */
	ES_CLI_OPT_ERROR = -3,      /* reported through usage_error; the exit
				     * status is in exit_status */
};

/* Prepares to scan argv (argv[0] is the subcommand's name and skipped)
 * against flags[0..n_flags-1]. Nothing is copied: argv and flags must
 * outlive the scanner. */
void es_cli_opts_init(es_cli_opts *sc, int argc, char **argv,
		      const es_cli_flag *flags, size_t n_flags,
		      es_cli_opts_style style, es_cli_usage_fn *usage_error);

/* Returns the index in flags of the next option, with *value its value (a
 * pointer into argv, NULL for a flag taking none); or ES_CLI_OPT_POSITIONAL
 * with *value the argument; or ES_CLI_OPT_END; or ES_CLI_OPT_ERROR after
 * reporting an unknown option, a missing value or an unwanted "=VALUE"
 * through usage_error. */
int es_cli_opts_next(es_cli_opts *sc, const char **value);

/* 1 for true/1/yes/on, 0 for false/0/no/off (words case-insensitive), -1 for
 * anything else. */
int es_cli_parse_bool(const char *text);

#endif
