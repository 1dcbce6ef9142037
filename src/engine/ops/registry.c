/* The operator registry: the union of every family's table. */
#include <string.h>

#include "engine/ops/op.h"
#include "engine/ops/families.h"

static const es_op_table *const families[] = {
#define ES_FAMILY(name) &es_ops_##name,
	ES_OP_FAMILIES
#undef ES_FAMILY
};

#define N_FAMILIES (sizeof(families) / sizeof(families[0]))

static bool same_domain(const char *a, const char *b)
{
	/* "" and "ai.onnx" both name the default domain */
	if (!a || !strcmp(a, "ai.onnx"))
		a = "";
	if (!b || !strcmp(b, "ai.onnx"))
		b = "";
	return strcmp(a, b) == 0;
}

const es_op_def *es_op_find(const char *domain, const char *op_type,
			    int64_t opset, bool *known_op)
{
	const es_op_def *best = NULL;
	bool known = false;
	for (size_t f = 0; f < N_FAMILIES; f++) {
		const es_op_table *t = families[f];
		for (size_t i = 0; i < t->count; i++) {
			const es_op_def *d = &t->defs[i];
			if (strcmp(d->op_type, op_type) || !same_domain(d->domain, domain))
				continue;
			known = true;
			if (opset < d->since || (d->until && opset > d->until))
				continue;
			/* the most specific (latest since) row wins */
			if (!best || d->since > best->since)
				best = d;
		}
	}
	if (known_op)
		*known_op = known;
	return best;
}

size_t es_op_count(void)
{
	size_t n = 0;
	for (size_t f = 0; f < N_FAMILIES; f++)
		n += families[f]->count;
	return n;
}

const es_op_def *es_op_at(size_t i)
{
	for (size_t f = 0; f < N_FAMILIES; f++) {
		if (i < families[f]->count)
			return &families[f]->defs[i];
		i -= families[f]->count;
	}
	return NULL;
}
