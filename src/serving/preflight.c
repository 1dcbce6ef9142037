/* Known-good validation cases and warmup runs of a loaded version. */
#include "serving/preflight.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/alloc.h"
#include "base/fp16.h"
#include "base/status.h"

#define VALIDATION_DIR "validation"
#define TOLERANCE_FILE "tolerance.json"
#define TOLERANCE_MAX_BYTES ((size_t)1 << 20)
/* A case file index above this is a mistake, whatever the model: no model
 * has that many inputs or outputs. */
#define MAX_FILE_INDEX 100000

/* ---- the plan: cases and tolerances read from validation/ ------------------ */

typedef struct case_file {
	unsigned k;
	char *rel; /* path relative to the version directory */
} case_file;

typedef struct vcase {
	char *name;    /* "validation" for files directly in validation/, else the dir name */
	char *rel_dir; /* "validation" or "validation/<name>" */
	case_file *inputs;
	size_t n_inputs;
	case_file *outputs;
	size_t n_outputs;
} vcase;

typedef struct tolerance {
	double atol;
	double rtol;
} tolerance;

typedef struct plan {
	const char *vdir;
	char *root_real; /* realpath(vdir): files must resolve inside it */
	es_model *model;
	vcase *cases;
	size_t n_cases;
	tolerance deflt;
	tolerance *per_output; /* one per model output */
} plan;

/* Returns a malloc'ed "a/b"; NULL when out of memory. */
static char *join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = malloc(la + lb + 2);
	if (!p)
		return NULL;
	memcpy(p, a, la);
	p[la] = '/';
	memcpy(p + la + 1, b, lb + 1);
	return p;
}

static void free_case(vcase *c)
{
	for (size_t i = 0; i < c->n_inputs; i++)
		free(c->inputs[i].rel);
	for (size_t i = 0; i < c->n_outputs; i++)
		free(c->outputs[i].rel);
	free(c->inputs);
	free(c->outputs);
	free(c->name);
	free(c->rel_dir);
}

static void plan_free(plan *p)
{
	for (size_t i = 0; i < p->n_cases; i++)
		free_case(&p->cases[i]);
	free(p->cases);
	free(p->per_output);
	free(p->root_real);
	memset(p, 0, sizeof(*p));
}

/* Checks that full (the path of rel) resolves inside the version directory:
 * a link out of it could make messages quote another file's contents. */
static int check_inside(const plan *p, const char *full, const char *rel, es_error *err)
{
	char *real = realpath(full, NULL);
	if (!real)
		return es_error_set(err, ES_EIO, "cannot open '%s': %s", rel, strerror(errno));
	size_t n = strlen(p->root_real);
	bool inside = !strncmp(real, p->root_real, n) &&
		      (real[n] == '/' || (n == 1 && p->root_real[0] == '/'));
	free(real);
	if (!inside)
		return es_error_set(err, ES_EINVAL,
			"'%s' is a link that leads outside the version directory", rel);
	return 0;
}

/* Opens rel (relative to the version directory) for reading after checking
 * that it resolves inside it. */
static int open_inside(const plan *p, const char *rel, int *fd_out, struct stat *st,
		       es_error *err)
{
	int rc;
	char *full = join(p->vdir, rel);
	if (!full)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	if ((rc = check_inside(p, full, rel, err)))
		goto out_free_full;
	int fd = open(full, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = es_error_set(err, ES_EIO, "cannot open '%s': %s", rel, strerror(errno));
		goto out_free_full;
	}
	if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		rc = es_error_set(err, ES_EIO, "'%s' is not a regular file", rel);
		goto out_free_full;
	}
	*fd_out = fd;
out_free_full:
	free(full);
	return rc;
}

/* Reads all of rel into a malloc'ed buffer (caller frees), refusing files
 * larger than max. */
static int read_inside(const plan *p, const char *rel, size_t max, uint8_t **buf_out,
		       size_t *len_out, es_error *err)
{
	int fd = -1;
	struct stat st;
	int rc = open_inside(p, rel, &fd, &st, err);
	if (rc)
		return rc;
	if ((uint64_t)st.st_size > (uint64_t)max) {
		close(fd);
		return es_error_set(err, ES_ETOOLARGE,
			"'%s' is %lld bytes; a validation file may hold at most %zu",
			rel, (long long)st.st_size, max);
	}
	size_t size = (size_t)st.st_size;
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf) {
		close(fd);
		return es_error_set(err, ES_ENOMEM, "cannot allocate %zu bytes to read '%s'",
				    size, rel);
	}
	size_t got = 0;
	while (got < size) {
		ssize_t r = read(fd, buf + got, size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = es_error_set(err, ES_EIO, "cannot read '%s': %s", rel,
					  r < 0 ? strerror(errno) : "it shrank while being read");
			free(buf);
			close(fd);
			return rc;
		}
		got += (size_t)r;
	}
	close(fd);
	*buf_out = buf;
	*len_out = size;
	return 0;
}

/* Reads a TensorProto file; *name_out (malloc'ed, "" when none) is its
 * tensor name. */
static int read_tensor(const plan *p, const char *rel, es_tensor *t, char **name_out,
		       es_error *err)
{
	uint8_t *buf;
	size_t len;
	int rc = read_inside(p, rel, ES_PREFLIGHT_MAX_FILE_BYTES, &buf, &len, err);
	if (rc)
		return rc;
	memset(t, 0, sizeof(*t));
	rc = es_tensor_parse_pb(buf, len, t, name_out, err);
	free(buf);
	if (rc)
		es_error_prefix(err, "'%s'", rel);
	return rc;
}

static int cmp_name(const void *a, const void *b)
{
	/* strcmp compares as unsigned char: byte order */
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Lists the names in directory rel (relative to vdir), sorted in byte order,
 * without "." and "..". The caller frees each name and the array. */
static int list_names(const plan *p, const char *rel, char ***names_out, size_t *n_out,
		      es_error *err)
{
	int rc = 0;
	char **names = NULL;
	size_t n = 0, cap = 0;
	char *full = join(p->vdir, rel);
	if (!full)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	if ((rc = check_inside(p, full, rel, err))) {
		free(full);
		return rc;
	}
	DIR *d = opendir(full);
	free(full);
	if (!d)
		return es_error_set(err, ES_EIO, "cannot read directory '%s': %s", rel,
				    strerror(errno));
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno)
				rc = es_error_set(err, ES_EIO, "cannot read directory '%s': %s",
						  rel, strerror(errno));
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		/* a directory listing is not bounded by the case limit: stop
		 * before it eats memory */
		if (n >= 100000) {
			rc = es_error_set(err, ES_ETOOLARGE, "directory '%s' holds too many files",
					  rel);
			break;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **nn = realloc(names, ncap * sizeof(*nn));
			if (!nn) {
				rc = es_error_set(err, ES_ENOMEM, "out of memory");
				break;
			}
			names = nn;
			cap = ncap;
		}
		if (!(names[n] = strdup(de->d_name))) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			break;
		}
		n++;
	}
	closedir(d);
	if (rc) {
		free_names(names, n);
		return rc;
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_name);
	*names_out = names;
	*n_out = n;
	return 0;
}

/* ---- listing the cases -------------------------------------------------------- */

/* 1 when name is <prefix><k>.pb (k decimal, no leading zero), 0 when it does
 * not start with prefix, -1 when it does but is not of that form. */
static int match_case_file(const char *name, const char *prefix, unsigned *k)
{
	size_t pl = strlen(prefix);
	if (strncmp(name, prefix, pl))
		return 0;
	const char *s = name + pl;
	size_t digits = strspn(s, "0123456789");
	if (digits == 0 || digits > 6 || (digits > 1 && s[0] == '0') || strcmp(s + digits, ".pb"))
		return -1;
	unsigned long v = strtoul(s, NULL, 10);
	if (v > MAX_FILE_INDEX)
		return -1;
	*k = (unsigned)v;
	return 1;
}

static int add_case_file(case_file **files, size_t *n, unsigned k, const char *rel_dir,
			 const char *name, es_error *err)
{
	case_file *v = realloc(*files, (*n + 1) * sizeof(*v));
	if (!v)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	*files = v;
	v[*n].k = k;
	v[*n].rel = join(rel_dir, name);
	if (!v[*n].rel)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	(*n)++;
	return 0;
}

/* Sorts a case's files into inputs and outputs when `name` is one. Returns
 * 1 when it was, 0 when name is something else, or a negative error. */
static int take_case_file(vcase *c, const char *rel_dir, const char *name, es_error *err)
{
	unsigned k;
	int m = match_case_file(name, "input_", &k);
	int rc;
	if (m > 0) {
		rc = add_case_file(&c->inputs, &c->n_inputs, k, rel_dir, name, err);
		return rc ? rc : 1;
	}
	if (m == 0 && (m = match_case_file(name, "output_", &k)) > 0) {
		rc = add_case_file(&c->outputs, &c->n_outputs, k, rel_dir, name, err);
		return rc ? rc : 1;
	}
	if (m < 0)
		return es_error_set(err, ES_EINVAL,
			"'%s/%s': a case file must be named input_<k>.pb or output_<k>.pb "
			"(k = 0, 1, ... in model order)", rel_dir, name);
	return 0;
}

static bool is_dir(const plan *p, const char *rel)
{
	char *full = join(p->vdir, rel);
	struct stat st;
	bool dir = full && stat(full, &st) == 0 && S_ISDIR(st.st_mode);
	free(full);
	return dir;
}

static int cmp_case_file(const void *a, const void *b)
{
	unsigned x = ((const case_file *)a)->k, y = ((const case_file *)b)->k;
	return x < y ? -1 : x > y;
}

/* Checks a case's file indices against the model, sorts them by k. */
static int check_case(const plan *p, vcase *c, const char *rel_dir, es_error *err)
{
	size_t n_in = es_model_num_inputs(p->model);
	size_t n_out = es_model_num_outputs(p->model);
	if (!c->n_outputs)
		return es_error_set(err, ES_EINVAL,
			"validation case '%s' has no output_<k>.pb in '%s': a case gives at "
			"least one expected output", c->name, rel_dir);
	for (size_t i = 0; i < c->n_inputs; i++)
		if (c->inputs[i].k >= n_in)
			return es_error_set(err, ES_EINVAL,
				"'%s': the model has %zu input%s, so input files are numbered "
				"below %zu", c->inputs[i].rel, n_in, n_in == 1 ? "" : "s", n_in);
	for (size_t i = 0; i < c->n_outputs; i++)
		if (c->outputs[i].k >= n_out)
			return es_error_set(err, ES_EINVAL,
				"'%s': the model has %zu output%s, so output files are numbered "
				"below %zu", c->outputs[i].rel, n_out, n_out == 1 ? "" : "s", n_out);
	qsort(c->inputs, c->n_inputs, sizeof(*c->inputs), cmp_case_file);
	qsort(c->outputs, c->n_outputs, sizeof(*c->outputs), cmp_case_file);
	return 0;
}

static vcase *new_case(plan *p, const char *name, const char *rel_dir, es_error *err)
{
	vcase *v = realloc(p->cases, (p->n_cases + 1) * sizeof(*v));
	if (!v) {
		es_error_set(err, ES_ENOMEM, "out of memory");
		return NULL;
	}
	p->cases = v;
	vcase *c = &v[p->n_cases];
	memset(c, 0, sizeof(*c));
	p->n_cases++;
	c->name = strdup(name);
	c->rel_dir = strdup(rel_dir);
	if (!c->name || !c->rel_dir) {
		es_error_set(err, ES_ENOMEM, "out of memory");
		return NULL;
	}
	return c;
}

/* A case directory validation/<name>. */
static int scan_case_dir(plan *p, const char *name, es_error *err)
{
	char **names = NULL;
	size_t n = 0;
	int rc;
	char *rel_dir = join(VALIDATION_DIR, name);
	if (!rel_dir)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	if ((rc = list_names(p, rel_dir, &names, &n, err)))
		goto out_free_rel;
	vcase *c = new_case(p, name, rel_dir, err);
	if (!c) {
		rc = err ? err->code : ES_ENOMEM;
		goto out_free_names;
	}
	for (size_t i = 0; i < n; i++) {
		if (names[i][0] == '.')
			continue;
		if ((rc = take_case_file(c, rel_dir, names[i], err)) < 0)
			goto out_free_names;
	}
	if (!c->n_inputs && !c->n_outputs) {
		rc = es_error_set(err, ES_EINVAL,
			"'%s' holds no input_<k>.pb or output_<k>.pb files: a directory in "
			"validation/ is one case", rel_dir);
		goto out_free_names;
	}
	rc = check_case(p, c, rel_dir, err);
out_free_names:
	free_names(names, n);
out_free_rel:
	free(rel_dir);
	return rc;
}

/* ---- tolerance.json --------------------------------------------------------- */

#define TOL_REL VALIDATION_DIR "/" TOLERANCE_FILE

static int tol_number(const cJSON *j, const char *where, double *out, es_error *err)
{
	if (!cJSON_IsNumber(j))
		return es_error_set(err, ES_EINVAL, "'%s': %s must be a number", TOL_REL, where);
	double v = j->valuedouble;
	if (!isfinite(v) || v < 0)
		return es_error_set(err, ES_EINVAL,
			"'%s': %s must be a finite number >= 0, got %g", TOL_REL, where, v);
	*out = v;
	return 0;
}

/* Reads {"atol": x, "rtol": y} keys of obj into t; outputs_out (when not
 * NULL) receives the "outputs" member, which is allowed only then. */
static int tol_object(const cJSON *obj, const char *where, tolerance *t,
		      const cJSON **outputs_out, es_error *err)
{
	char what[300];
	if (!cJSON_IsObject(obj))
		return es_error_set(err, ES_EINVAL, "'%s': %s must be a JSON object", TOL_REL,
				    where);
	for (const cJSON *c = obj->child; c; c = c->next) {
		const char *key = c->string ? c->string : "";
		for (const cJSON *prev = obj->child; prev != c; prev = prev->next)
			if (prev->string && !strcmp(prev->string, key))
				return es_error_set(err, ES_EINVAL,
					"'%s': key '%s' appears twice in %s", TOL_REL, key, where);
		snprintf(what, sizeof(what), "'%s' in %s", key, where);
		int rc;
		if (!strcmp(key, "atol"))
			rc = tol_number(c, what, &t->atol, err);
		else if (!strcmp(key, "rtol"))
			rc = tol_number(c, what, &t->rtol, err);
		else if (!strcmp(key, "outputs") && outputs_out) {
			if (!cJSON_IsObject(c))
				return es_error_set(err, ES_EINVAL,
					"'%s': 'outputs' must be an object of output name -> "
					"{\"atol\": ..., \"rtol\": ...}", TOL_REL);
			*outputs_out = c;
			rc = 0;
		} else {
			return es_error_set(err, ES_EINVAL,
				"'%s': unknown key '%s' in %s (expected %s)", TOL_REL, key, where,
				outputs_out ? "atol, rtol or outputs" : "atol or rtol");
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int load_tolerance(plan *p, es_error *err)
{
	uint8_t *buf;
	size_t len;
	int rc = read_inside(p, TOL_REL, TOLERANCE_MAX_BYTES, &buf, &len, err);
	if (rc)
		return rc;
	const char *end = NULL;
	cJSON *doc = cJSON_ParseWithLengthOpts((const char *)buf, len, &end, false);
	if (!doc) {
		size_t at = end && end >= (const char *)buf && end <= (const char *)buf + len
			? (size_t)(end - (const char *)buf) : 0;
		rc = es_error_set(err, ES_EPARSE, "'%s' is not valid JSON (error at byte %zu)",
				  TOL_REL, at);
		goto out_free_buf;
	}
	const cJSON *outputs = NULL;
	if ((rc = tol_object(doc, "the top level", &p->deflt, &outputs, err)))
		goto out_free_doc;
	size_t n_out = es_model_num_outputs(p->model);
	for (size_t i = 0; i < n_out; i++)
		p->per_output[i] = p->deflt;
	for (const cJSON *o = outputs ? outputs->child : NULL; o; o = o->next) {
		const char *name = o->string ? o->string : "";
		int idx = es_model_output_index(p->model, name);
		if (idx < 0) {
			rc = es_error_set(err, ES_EINVAL,
				"'%s': 'outputs' names '%s', which is not an output of the model",
				TOL_REL, name);
			goto out_free_doc;
		}
		for (const cJSON *prev = outputs->child; prev != o; prev = prev->next)
			if (prev->string && !strcmp(prev->string, name)) {
				rc = es_error_set(err, ES_EINVAL,
					"'%s': output '%s' appears twice in 'outputs'", TOL_REL, name);
				goto out_free_doc;
			}
		char where[300];
		snprintf(where, sizeof(where), "outputs.'%s'", name);
		if ((rc = tol_object(o, where, &p->per_output[idx], NULL, err)))
			goto out_free_doc;
	}
out_free_doc:
	cJSON_Delete(doc);
out_free_buf:
	free(buf);
	return rc;
}

/* Reads validation/ of vdir into p. *found is false (and p empty) when
 * there is no validation/ directory. */
static int plan_load(plan *p, es_model *model, const char *vdir, bool *found, es_error *err)
{
	char **names = NULL;
	size_t n = 0;
	int rc;
	memset(p, 0, sizeof(*p));
	p->vdir = vdir;
	p->model = model;
	p->deflt.atol = ES_PREFLIGHT_DEFAULT_ATOL;
	p->deflt.rtol = ES_PREFLIGHT_DEFAULT_RTOL;
	*found = false;
	if (!vdir || !model)
		return es_error_set(err, ES_EINVAL, "no model or version directory given");

	char *vfull = join(vdir, VALIDATION_DIR);
	if (!vfull)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	struct stat st;
	int st_rc = stat(vfull, &st), st_errno = errno;
	free(vfull);
	if (st_rc != 0 && (st_errno == ENOENT || st_errno == ENOTDIR))
		return 0;
	if (st_rc != 0)
		return es_error_set(err, ES_EIO, "cannot open '%s': %s", VALIDATION_DIR,
				    strerror(st_errno));
	if (!S_ISDIR(st.st_mode))
		return es_error_set(err, ES_EINVAL, "'%s' is not a directory", VALIDATION_DIR);
	*found = true;

	size_t n_out = es_model_num_outputs(model);
	p->root_real = realpath(vdir, NULL);
	if (!p->root_real)
		return es_error_set(err, ES_EIO, "cannot resolve the version directory: %s",
				    strerror(errno));
	p->per_output = calloc(n_out ? n_out : 1, sizeof(*p->per_output));
	if (!p->per_output) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out_fail;
	}
	for (size_t i = 0; i < n_out; i++)
		p->per_output[i] = p->deflt;
	if ((rc = list_names(p, VALIDATION_DIR, &names, &n, err)))
		goto out_fail;

	/* files directly in validation/ form the first case */
	vcase *top = new_case(p, VALIDATION_DIR, VALIDATION_DIR, err);
	if (!top) {
		rc = err ? err->code : ES_ENOMEM;
		goto out_fail;
	}
	size_t n_dirs = 0;
	bool has_tolerance = false;
	for (size_t i = 0; i < n; i++) {
		const char *name = names[i];
		if (name[0] == '.')
			continue;
		if (!strcmp(name, TOLERANCE_FILE)) {
			has_tolerance = true;
			continue;
		}
		if ((rc = take_case_file(&p->cases[0], VALIDATION_DIR, name, err)) < 0)
			goto out_fail;
		if (rc == 1)
			continue;
		char *rel = join(VALIDATION_DIR, name);
		if (!rel) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			goto out_fail;
		}
		bool dir = is_dir(p, rel);
		free(rel);
		if (!dir)
			continue; /* a README or the like */
		/* keep directory names at the front of names[] */
		char *tmp = names[n_dirs];
		names[n_dirs] = names[i];
		names[i] = tmp;
		n_dirs++;
	}
	rc = 0;
	bool top_used = p->cases[0].n_inputs || p->cases[0].n_outputs;
	if (n_dirs + top_used > ES_PREFLIGHT_MAX_CASES) {
		rc = es_error_set(err, ES_ETOOLARGE,
			"'%s' holds %zu validation cases; at most %d are allowed",
			VALIDATION_DIR, n_dirs + top_used, ES_PREFLIGHT_MAX_CASES);
		goto out_fail;
	}
	if (top_used) {
		if ((rc = check_case(p, &p->cases[0], VALIDATION_DIR, err)))
			goto out_fail;
	} else {
		free_case(&p->cases[0]);
		p->n_cases = 0;
	}
	/* swapping kept the directories' relative order: still byte order */
	for (size_t i = 0; i < n_dirs; i++)
		if ((rc = scan_case_dir(p, names[i], err)))
			goto out_fail;
	if (!p->n_cases) {
		rc = es_error_set(err, ES_EINVAL,
			"'%s' holds no validation case: expected input_<k>.pb and "
			"output_<k>.pb files in it or in case directories such as "
			"%s/test_data_set_0/", VALIDATION_DIR, VALIDATION_DIR);
		goto out_fail;
	}
	if (has_tolerance && (rc = load_tolerance(p, err)))
		goto out_fail;
	free_names(names, n);
	return 0;
out_fail:
	free_names(names, n);
	plan_free(p);
	return rc;
}

/* ---- running a case ------------------------------------------------------------ */

static void free_tensors(es_tensor *t, size_t n)
{
	if (!t)
		return;
	for (size_t i = 0; i < n; i++)
		es_tensor_free_data(&t[i]);
	free(t);
}

/* Reads a case's files for inputs (is_input) or outputs into slots (one per
 * model input/output, zeroed; the caller frees them). given[i] says which
 * slots a file filled. A file binds to the slot of its tensor's name when
 * that is a name of the model's, else to slot k. */
static int load_case_files(const plan *p, const vcase *c, bool is_input, es_tensor *slots,
			   const char **given, es_error *err)
{
	const case_file *files = is_input ? c->inputs : c->outputs;
	size_t n_files = is_input ? c->n_inputs : c->n_outputs;
	const char *what = is_input ? "input" : "output";
	for (size_t f = 0; f < n_files; f++) {
		es_tensor t;
		char *name = NULL;
		int rc = read_tensor(p, files[f].rel, &t, &name, err);
		if (rc)
			return rc;
		int idx = -1;
		if (name[0])
			idx = is_input ? es_model_input_index(p->model, name)
				       : es_model_output_index(p->model, name);
		free(name);
		if (idx < 0)
			idx = (int)files[f].k;
		if (given[idx]) {
			es_tensor_free_data(&t);
			const es_value_info *vi = is_input ? es_model_input(p->model, (size_t)idx)
							   : es_model_output(p->model, (size_t)idx);
			return es_error_set(err, ES_EINVAL,
				"'%s' and '%s' both give %s '%s' (a file binds to the %s its "
				"tensor is named after, else to %s k of the model)",
				given[idx], files[f].rel, what, vi->name, what, what);
		}
		slots[idx] = t;
		given[idx] = files[f].rel;
	}
	return 0;
}

static void format_shape(const es_tensor *t, char *buf, size_t cap)
{
	size_t at = 0;
	buf[0] = '\0';
	at += (size_t)snprintf(buf + at, cap - at, "[");
	for (int d = 0; d < t->ndim && at < cap; d++)
		at += (size_t)snprintf(buf + at, cap - at, "%s%lld", d ? "," : "",
				       (long long)t->dims[d]);
	if (at < cap)
		snprintf(buf + at, cap - at, "]");
}

static bool is_floating(es_dtype dt)
{
	return dt == ES_DT_FLOAT || dt == ES_DT_DOUBLE || dt == ES_DT_FLOAT16 ||
	       dt == ES_DT_BFLOAT16;
}

static bool is_unsigned(es_dtype dt)
{
	return dt == ES_DT_UINT8 || dt == ES_DT_UINT16 || dt == ES_DT_UINT32 ||
	       dt == ES_DT_UINT64 || dt == ES_DT_BOOL;
}

static double get_double(const es_tensor *t, size_t i)
{
	switch (t->dtype) {
	case ES_DT_FLOAT: return ((const float *)t->data)[i];
	case ES_DT_DOUBLE: return ((const double *)t->data)[i];
	case ES_DT_FLOAT16: return es_half_to_float(((const uint16_t *)t->data)[i]);
	case ES_DT_BFLOAT16: return es_bf16_to_float(((const uint16_t *)t->data)[i]);
	default: return NAN;
	}
}

static int64_t get_i64(const es_tensor *t, size_t i)
{
	switch (t->dtype) {
	case ES_DT_INT8: return ((const int8_t *)t->data)[i];
	case ES_DT_INT16: return ((const int16_t *)t->data)[i];
	case ES_DT_INT32: return ((const int32_t *)t->data)[i];
	case ES_DT_INT64: return ((const int64_t *)t->data)[i];
	default: return 0;
	}
}

static uint64_t get_u64(const es_tensor *t, size_t i)
{
	switch (t->dtype) {
	case ES_DT_UINT8: return ((const uint8_t *)t->data)[i];
	case ES_DT_BOOL: return ((const uint8_t *)t->data)[i] != 0;
	case ES_DT_UINT16: return ((const uint16_t *)t->data)[i];
	case ES_DT_UINT32: return ((const uint32_t *)t->data)[i];
	case ES_DT_UINT64: return ((const uint64_t *)t->data)[i];
	default: return 0;
	}
}

/* Whether got is within tolerance of want; *tol_out the tolerance used. */
static bool close_enough(double got, double want, const tolerance *tol, double *tol_out)
{
	*tol_out = tol->atol + tol->rtol * fabs(want);
	if (isnan(want))
		return isnan(got);
	if (isnan(got))
		return false;
	if (isinf(want) || isinf(got))
		return got == want;
	return fabs(got - want) <= *tol_out;
}

static int compare_output(const plan *p, const vcase *c, size_t j, const char *rel,
			  const es_tensor *want, const es_tensor *got, es_error *err)
{
	const char *oname = es_model_output(p->model, j)->name;
	char got_shape[128], want_shape[128];
	format_shape(got, got_shape, sizeof(got_shape));
	format_shape(want, want_shape, sizeof(want_shape));
	if (got->dtype != want->dtype)
		return es_error_set(err, ES_EINVAL,
			"validation case '%s': output '%s' is %s %s but '%s' expects %s %s",
			c->name, oname, es_dtype_name(got->dtype), got_shape, rel,
			es_dtype_name(want->dtype), want_shape);
	bool same_shape = got->ndim == want->ndim;
	for (int d = 0; same_shape && d < got->ndim; d++)
		same_shape = got->dims[d] == want->dims[d];
	if (!same_shape)
		return es_error_set(err, ES_EINVAL,
			"validation case '%s': output '%s' has shape %s but '%s' expects %s",
			c->name, oname, got_shape, rel, want_shape);
	size_t esz = es_dtype_size(got->dtype);
	if (!esz)
		return es_error_set(err, ES_EUNSUPPORTED,
			"validation case '%s': output '%s' has type %s, which cannot be compared",
			c->name, oname, es_dtype_name(got->dtype));
	size_t n = got->nbytes / esz;
	if (want->nbytes != got->nbytes || (n && (!got->data || !want->data)))
		return es_error_set(err, ES_EINTERNAL,
			"validation case '%s': output '%s' holds %zu bytes, '%s' %zu",
			c->name, oname, got->nbytes, rel, want->nbytes);

	const tolerance *tol = &p->per_output[j];
	size_t n_bad = 0, first = 0;
	double first_tol = 0;
	for (size_t i = 0; i < n; i++) {
		bool ok;
		double t = 0;
		if (is_floating(got->dtype))
			ok = close_enough(get_double(got, i), get_double(want, i), tol, &t);
		else if (is_unsigned(got->dtype))
			ok = get_u64(got, i) == get_u64(want, i);
		else
			ok = get_i64(got, i) == get_i64(want, i);
		if (!ok && n_bad++ == 0) {
			first = i;
			first_tol = t;
		}
	}
	if (!n_bad)
		return 0;

	char more[96] = "";
	if (n_bad > 1)
		snprintf(more, sizeof(more), "; %zu of %zu elements differ", n_bad, n);
	if (is_floating(got->dtype)) {
		double g = get_double(got, first), w = get_double(want, first);
		return es_error_set(err, ES_EINVAL,
			"validation case '%s': output '%s' element %zu (of %zu) is %.7g but "
			"expected %.7g (error %.4g, tolerance %.4g)%s",
			c->name, oname, first, n, g, w, fabs(g - w), first_tol, more);
	}
	if (is_unsigned(got->dtype))
		return es_error_set(err, ES_EINVAL,
			"validation case '%s': output '%s' element %zu (of %zu) is %llu but "
			"expected %llu (%s outputs must match exactly)%s",
			c->name, oname, first, n, (unsigned long long)get_u64(got, first),
			(unsigned long long)get_u64(want, first), es_dtype_name(got->dtype), more);
	return es_error_set(err, ES_EINVAL,
		"validation case '%s': output '%s' element %zu (of %zu) is %lld but "
		"expected %lld (%s outputs must match exactly)%s",
		c->name, oname, first, n, (long long)get_i64(got, first),
		(long long)get_i64(want, first), es_dtype_name(got->dtype), more);
}

/* Reads case c's inputs into a new array (one per model input, caller frees
 * with free_tensors). */
static int load_case_inputs(const plan *p, const vcase *c, es_tensor **inputs_out,
			    es_error *err)
{
	size_t n_in = es_model_num_inputs(p->model);
	es_tensor *inputs = calloc(n_in ? n_in : 1, sizeof(*inputs));
	const char **given = calloc(n_in ? n_in : 1, sizeof(*given));
	int rc;
	if (!inputs || !given) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out_fail;
	}
	if ((rc = load_case_files(p, c, true, inputs, given, err)))
		goto out_fail;
	for (size_t i = 0; i < n_in; i++) {
		if (given[i])
			continue;
		rc = es_error_set(err, ES_EINVAL,
			"validation case '%s': no file gives input '%s' (expected "
			"'%s/input_%zu.pb', or a file whose tensor is named '%s')",
			c->name, es_model_input(p->model, i)->name, c->rel_dir, i,
			es_model_input(p->model, i)->name);
		goto out_fail;
	}
	free(given);
	*inputs_out = inputs;
	return 0;
out_fail:
	free(given);
	free_tensors(inputs, n_in);
	return rc;
}

static int run_case(const plan *p, const vcase *c, es_session *session, es_error *err)
{
	size_t n_in = es_model_num_inputs(p->model);
	size_t n_out = es_model_num_outputs(p->model);
	es_tensor *inputs = NULL;
	es_tensor *want = calloc(n_out ? n_out : 1, sizeof(*want));
	es_tensor *got = calloc(n_out ? n_out : 1, sizeof(*got));
	const char **given = calloc(n_out ? n_out : 1, sizeof(*given));
	int rc;
	if (!want || !got || !given) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out_free;
	}
	if ((rc = load_case_inputs(p, c, &inputs, err)))
		goto out_free;
	if ((rc = load_case_files(p, c, false, want, given, err)))
		goto out_free;
	if ((rc = es_session_run(session, inputs, n_in, got, err))) {
		es_error_prefix(err, "validation case '%s': the run failed", c->name);
		goto out_free;
	}
	for (size_t j = 0; j < n_out; j++)
		if (given[j] && (rc = compare_output(p, c, j, given[j], &want[j], &got[j], err)))
			goto out_free;
out_free:
	free(given);
	free(got); /* data owned by the session */
	free_tensors(want, n_out);
	free_tensors(inputs, n_in);
	return rc;
}

int es_preflight_validate(es_model *model, es_session *session, const char *version_dir,
			  size_t *n_cases_out, es_error *err)
{
	plan p;
	bool found;
	if (n_cases_out)
		*n_cases_out = 0;
	if (!session)
		return es_error_set(err, ES_EINVAL, "no session given");
	int rc = plan_load(&p, model, version_dir, &found, err);
	if (rc || !found)
		return rc;
	if (n_cases_out)
		*n_cases_out = p.n_cases;
	for (size_t i = 0; i < p.n_cases && !rc; i++)
		rc = run_case(&p, &p.cases[i], session, err);
	plan_free(&p);
	return rc;
}

/* ---- warmup --------------------------------------------------------------------- */

/* Zero-filled inputs, open dimensions set to 1. */
static int zero_inputs(es_model *model, es_tensor **inputs_out, es_error *err)
{
	size_t n_in = es_model_num_inputs(model);
	es_tensor *inputs = calloc(n_in ? n_in : 1, sizeof(*inputs));
	int rc = 0;
	if (!inputs)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	for (size_t i = 0; i < n_in; i++) {
		const es_value_info *vi = es_model_input(model, i);
		if (vi->ndim < 0) {
			rc = es_error_set(err, ES_EUNSUPPORTED,
				"cannot make up a warmup input for '%s': the model does not fix "
				"its rank; give a validation case (%s/input_%zu.pb) to warm up with",
				vi->name, VALIDATION_DIR, i);
			goto out_fail;
		}
		int64_t dims[ES_MAX_DIMS];
		for (int d = 0; d < vi->ndim && d < ES_MAX_DIMS; d++)
			dims[d] = vi->dims[d] < 0 ? 1 : vi->dims[d];
		if ((rc = es_tensor_alloc(&inputs[i], vi->dtype, vi->ndim, dims, err))) {
			es_error_prefix(err, "warmup input '%s'", vi->name);
			goto out_fail;
		}
	}
	*inputs_out = inputs;
	return 0;
out_fail:
	free_tensors(inputs, n_in);
	return rc;
}

int es_preflight_warmup(es_model *model, es_session **sessions, int n_sessions, int runs,
			const char *version_dir, es_error *err)
{
	if (runs <= 0 || n_sessions <= 0)
		return 0;
	if (!model || !sessions)
		return es_error_set(err, ES_EINVAL, "no model or sessions given");
	plan p;
	bool found = false;
	int rc = 0;
	size_t n_in = es_model_num_inputs(model);
	size_t n_out = es_model_num_outputs(model);
	es_tensor *inputs = NULL;
	es_tensor *outputs = calloc(n_out ? n_out : 1, sizeof(*outputs));
	if (!outputs)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	if (version_dir && (rc = plan_load(&p, model, version_dir, &found, err)))
		goto out_free;
	if (found) {
		rc = load_case_inputs(&p, &p.cases[0], &inputs, err);
		plan_free(&p);
	} else {
		rc = zero_inputs(model, &inputs, err);
	}
	if (rc)
		goto out_free;
	for (int s = 0; s < n_sessions; s++) {
		if (!sessions[s]) {
			rc = es_error_set(err, ES_EINVAL, "warmup: session %d is missing", s);
			goto out_free;
		}
		for (int r = 0; r < runs; r++)
			if ((rc = es_session_run(sessions[s], inputs, n_in, outputs, err))) {
				es_error_prefix(err, "warmup run %d of %d on session %d", r + 1,
						runs, s);
				goto out_free;
			}
	}
out_free:
	free(outputs);
	free_tensors(inputs, n_in);
	return rc;
}
