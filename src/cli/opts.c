/*
 * The command-line scanner every subcommand shares: tells positional
 * arguments from options, looks options up in the subcommand's flag table
 * and finds their values, so run.c, bench.c and serve.c only say what each
 * option means.
 */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"

void es_cli_opts_init(es_cli_opts *sc, int argc, char **argv,
		      const es_cli_flag *flags, size_t n_flags,
		      es_cli_opts_style style, es_cli_usage_fn *usage_error)
{
	memset(sc, 0, sizeof(*sc));
	sc->argc = argc;
	sc->argv = argv;
	sc->next = 1;
	sc->flags = flags;
	sc->n_flags = n_flags;
	sc->style = style;
	sc->usage_error = usage_error;
}

int es_cli_parse_bool(const char *text)
{
	if (!strcasecmp(text, "true") || !strcmp(text, "1") || !strcasecmp(text, "yes") ||
	    !strcasecmp(text, "on"))
		return 1;
	if (!strcasecmp(text, "false") || !strcmp(text, "0") || !strcasecmp(text, "no") ||
	    !strcasecmp(text, "off"))
		return 0;
	return -1;
}

/* Index of the flag named by the first name_len bytes of arg, or n_flags. */
static size_t find_flag(const es_cli_opts *sc, const char *arg, size_t name_len)
{
	size_t f;
	for (f = 0; f < sc->n_flags; f++)
		if (strlen(sc->flags[f].name) == name_len &&
		    memcmp(sc->flags[f].name, arg, name_len) == 0)
			break;
	return f;
}

static int report(es_cli_opts *sc, int status)
{
	sc->exit_status = status;
	return ES_CLI_OPT_ERROR;
}

int es_cli_opts_next(es_cli_opts *sc, const char **value)
{
	bool ovms = sc->style == ES_CLI_OPTS_OVMS;

	*value = NULL;
	if (sc->next >= sc->argc)
		return ES_CLI_OPT_END;
	const char *arg = sc->argv[sc->next++];

	if (ovms) {
		/* Flags taking no value (-h, --help) only when typed exactly. */
		size_t f = find_flag(sc, arg, strlen(arg));
		if (f < sc->n_flags && !sc->flags[f].takes_value)
			return (int)f;
		if (strncmp(arg, "--", 2) != 0) {
			*value = arg;
			return ES_CLI_OPT_POSITIONAL;
		}
	} else {
		if (sc->only_positional || arg[0] != '-' || strcmp(arg, "-") == 0) {
			*value = arg;
			return ES_CLI_OPT_POSITIONAL;
		}
		if (strcmp(arg, "--") == 0) {
			sc->only_positional = true;
			return es_cli_opts_next(sc, value);
		}
	}

	const char *eq = strchr(arg, '=');
	size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
	size_t f = find_flag(sc, arg, name_len);
	if (f < sc->n_flags && ovms && !sc->flags[f].takes_value)
		f = sc->n_flags; /* "--help=x" is no option in this style */
	if (f == sc->n_flags) {
		if (ovms)
			return report(sc, sc->usage_error("unknown option '%.*s'",
							  (int)name_len, arg));
		return report(sc, sc->usage_error("unknown option '%s'", arg));
	}

	const es_cli_flag *flag = &sc->flags[f];
	if (!flag->takes_value) {
		if (eq)
			return report(sc, sc->usage_error("option '%s' takes no value (got '%s')",
							  flag->name, arg));
		return (int)f;
	}
	if (eq) {
		*value = eq + 1;
	} else if (flag->optional_bool) {
		/* OVMS spells these as bare flags; a following boolean word is
		 * taken as the value */
		if (sc->next < sc->argc && es_cli_parse_bool(sc->argv[sc->next]) >= 0)
			*value = sc->argv[sc->next++];
		else
			*value = "true";
	} else if (sc->next < sc->argc) {
		*value = sc->argv[sc->next++];
	} else {
		return report(sc, sc->usage_error("option '%s' needs a value",
						  flag->name));
	}
	return (int)f;
}
