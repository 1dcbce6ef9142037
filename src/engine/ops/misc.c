/* Operator family: misc. */
#include "engine/ops/families.h"

static const es_op_def defs[] = {
	{ .op_type = NULL },
};

const es_op_table es_ops_misc = { defs, 0 };
