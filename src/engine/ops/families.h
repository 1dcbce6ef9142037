/* The operator families; each ops/<name>.c defines `es_ops_<name>`. */
#ifndef ES_ENGINE_OPS_FAMILIES_H
#define ES_ENGINE_OPS_FAMILIES_H

#include "engine/ops/op.h"

#define ES_OP_FAMILIES \
	ES_FAMILY(elementwise) \
	ES_FAMILY(shape) \
	ES_FAMILY(transform) \
	ES_FAMILY(gemm) \
	ES_FAMILY(bmm) \
	ES_FAMILY(conv) \
	ES_FAMILY(qconv) \
	ES_FAMILY(pool) \
	ES_FAMILY(norm) \
	ES_FAMILY(softmax) \
	ES_FAMILY(reduce) \
	ES_FAMILY(resize) \
	ES_FAMILY(quant) \
	ES_FAMILY(qelem) \
	ES_FAMILY(qmatmul) \
	ES_FAMILY(misc)

#define ES_FAMILY(name) extern const es_op_table es_ops_##name;
ES_OP_FAMILIES
#undef ES_FAMILY

#endif
