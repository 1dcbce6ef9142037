/* Clean-up passes that remove nodes which only pass their input through. */
#include "engine/opt/passes.h"

/* True when Dropout node n is the identity on its input 0 in every run:
 * its mask output is absent or unread, and training_mode (opset >= 12) is
 * absent or a constant false. Anything else keeps the node, whose kernel
 * checks it at run time. */
static bool dropout_is_identity(const es_graph *g, const es_node *n)
{
	if (n->n_outputs > 1 && n->outputs[1] >= 0 &&
	    es_rw_consumers(g, n->outputs[1], NULL, 0) > 0)
		return false;
	for (int o = 0; o < g->n_outputs; o++)
		if (n->n_outputs > 1 && g->outputs[o] == n->outputs[1])
			return false;
	if (n->opset >= 12 && n->n_inputs > 2 && n->inputs[2] >= 0) {
		const es_tensor *t = es_rw_const_input(g, n, 2);
		if (!t || t->dtype != ES_DT_BOOL || t->nbytes != 1 || *(const uint8_t *)t->data)
			return false;
	}
	return true;
}

static int run_eliminate_identity(es_graph *g, es_pass_ctx *c)
{
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		bool identity = es_rw_is(node, "", "Identity") ||
				(es_rw_is(node, "", "Dropout") && dropout_is_identity(g, node));
		if (!identity || node->n_inputs < 1 || node->n_outputs < 1)
			continue;
		if (es_rw_bypass(g, n, node->inputs[0], node->outputs[0]))
			c->changes++;
	}
	return 0;
}

const es_pass es_pass_eliminate_identity = { "eliminate_identity", run_eliminate_identity };
