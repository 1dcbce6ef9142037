/* The optimizer pipeline (opt.h). */
#include <string.h>
#include <time.h>

#include "engine/opt/opt.h"
#include "engine/opt/passes.h"

/* The default pipeline, in order: clean-ups first, so the fusions see the
 * plain patterns, then fusions, then layout. */
const es_pass *const es_opt_default_passes[] = {
	&es_pass_eliminate_identity,
	&es_pass_fuse_qdq_matmul,   /* int8 matmul: sees unfolded weight DQ too */
	&es_pass_fuse_qdq,          /* int8: before the float conv fusions */
	&es_pass_conv_bn_fold,
	&es_pass_fuse_conv,
	&es_pass_fuse_layernorm,
	&es_pass_fuse_gelu,
	&es_pass_fuse_matmul,
	&es_pass_fuse_bmm,          /* after fuse_matmul: constant B is its */
	&es_pass_layout_nhwc,       /* layout last: it sees the fused ops */
	&es_pass_transpose_cleanup,
};
const size_t es_opt_default_passes_n =
	sizeof(es_opt_default_passes) / sizeof(es_opt_default_passes[0]);

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int live_nodes(const es_graph *g)
{
	int n = 0;
	for (int i = 0; i < g->n_nodes; i++)
		n += !g->nodes[i].dead;
	return n;
}

int es_opt_run_passes(es_graph *g, const es_pass *const *passes, size_t n,
		      const es_model_options *opts, es_opt_report *rep,
		      es_error *err)
{
	es_model_options none = { 0 };
	es_opt_report local;
	if (!rep)
		rep = &local;
	memset(rep, 0, sizeof(*rep));
	rep->nodes_before = live_nodes(g);
	for (size_t i = 0; i < n; i++) {
		es_pass_ctx c = { .err = err, .opts = opts ? opts : &none };
		int before = live_nodes(g);
		double t0 = now_ms();
		int rc = passes[i]->run(g, &c);
		if (!rc)
			rc = es_rw_compact(g, err);
		if (rc) {
			if (err && !err->msg[0])
				es_error_set(err, rc, "optimizer pass %s failed", passes[i]->name);
			return rc;
		}
		if (rep->n_passes < ES_OPT_MAX_PASSES) {
			es_opt_pass_stat *st = &rep->pass[rep->n_passes++];
			st->name = passes[i]->name;
			st->nodes_before = before;
			st->nodes_after = g->n_nodes;
			st->changes = c.changes;
			st->ms = now_ms() - t0;
		}
	}
	rep->nodes_after = g->n_nodes;
	return 0;
}

int es_opt_run(es_graph *g, const es_model_options *opts, es_opt_report *rep,
	       es_error *err)
{
	return es_opt_run_passes(g, es_opt_default_passes, es_opt_default_passes_n,
				 opts, rep, err);
}

int es_opt_check_domains(const es_graph *g, es_error *err)
{
	for (int i = 0; i < g->n_opsets; i++)
		if (g->opsets[i].domain && !strcmp(g->opsets[i].domain, ES_DOMAIN))
			return es_error_set(err, ES_EGRAPH,
				"model imports the operator domain '%s', which is reserved for the engine's own fused operators",
				ES_DOMAIN);
	for (int n = 0; n < g->n_nodes; n++)
		if (g->nodes[n].domain && !strcmp(g->nodes[n].domain, ES_DOMAIN))
			return es_error_set(err, ES_EGRAPH,
				"node '%s' (%s): operator domain '%s' is reserved for the engine's own fused operators",
				g->nodes[n].name, g->nodes[n].op_type, ES_DOMAIN);
	return 0;
}
