/*
 * edgeserve: one binary, one subcommand per file (dispatch.c has the table).
 */
#include "cli/cli.h"

int main(int argc, char **argv)
{
	return es_cli_dispatch(argc, argv);
}
