/*
 * The edgeserve command line's dispatcher: finds the subcommand (argv[1])
 * in a table and hands it the rest of argv. main.c calls it; so does the
 * test-only edgeserve_faulty binary after registering its backend.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "edgeserve/engine.h"

typedef struct cli_command {
	const char *name;
	const char *summary;
	int (*main)(int argc, char **argv);
} cli_command;

/* Add a subcommand by adding its file and one row here. */
static const cli_command commands[] = {
	{"serve", "serve models over HTTP (KServe v2, TF-Serving REST, metrics)", es_cli_serve},
	{"run", "run and benchmark one ONNX model locally", es_cli_run},
	{"bench", "load-test a KServe v2 server (latency, throughput)", es_cli_bench},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_usage(FILE *out)
{
	fprintf(out,
		"usage: edgeserve COMMAND [ARGS...]\n"
		"       edgeserve --help | --version\n"
		"\n"
		"commands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  %-10s %s\n", commands[i].name,
			commands[i].summary);
	fprintf(out, "\n"
		     "Run 'edgeserve COMMAND --help' for the options of a command.\n");
}

int es_cli_dispatch(int argc, char **argv)
{
	if (argc < 2) {
		print_usage(stderr);
		return ES_CLI_EXIT_USAGE;
	}
	const char *arg = argv[1];
	if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0 ||
	    strcmp(arg, "help") == 0) {
		print_usage(stdout);
		return ES_CLI_EXIT_OK;
	}
	if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
		printf("edgeserve %s\n", ES_ENGINE_VERSION);
		return ES_CLI_EXIT_OK;
	}
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(arg, commands[i].name) == 0)
			return commands[i].main(argc - 1, argv + 1);

	if (arg[0] == '-')
		fprintf(stderr, "edgeserve: unknown option '%s'\n", arg);
	else
		fprintf(stderr, "edgeserve: unknown command '%s'\n", arg);
	fprintf(stderr, "Run 'edgeserve --help' for the list of commands.\n");
	return ES_CLI_EXIT_USAGE;
}
