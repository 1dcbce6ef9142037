/*
 * edgeserve_faulty: the edgeserve command line with the fault-injecting
 * "faulty" backend registered, for integration tests only. The edgeserve
 * binary itself never contains that backend.
 */
#include <stdio.h>

#include "cli/cli.h"
#include "support/faulty_backend.h"

int main(int argc, char **argv)
{
	if (es_faulty_backend_register()) {
		fprintf(stderr, "edgeserve_faulty: cannot register the 'faulty' backend\n");
		return ES_CLI_EXIT_FAILURE;
	}
	return es_cli_dispatch(argc, argv);
}
