/*
 * stream.c: `lockstep run` in C. Opens a model, loads it on a backend, streams a
 * continuation of the prompt to stdout and prints the run's summary (JSON) to stderr.
 *
 *   cc -I crates/lockstep-ffi/include examples/c/stream.c target/release/liblockstep_ffi.a \
 *      -lpthread -ldl -lm -o stream
 *   ./stream --model gemma3-270m --backend ort-cpu --max-tokens 32 "The three primary colors are"
 *
 * Options (the same names and defaults as `lockstep run`): --model M, --backend B,
 * --max-tokens N, --temperature T, --top-k K, --top-p P, --min-p P, --repeat-penalty R,
 * --seed S, --stop TEXT (repeatable), --threads N.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lockstep.h"

/* Prints what went wrong and returns the exit code. */
static int fail(const char *what, LockstepStatus status) {
    fprintf(stderr, "stream: %s failed (status %d): %s\n", what, (int)status,
            lockstep_last_error_message());
    return 1;
}

/* Streams each token's text as soon as it is released. */
static int32_t on_token(void *user_data, uint32_t token_id, const char *text, size_t text_len) {
    (void)user_data;
    (void)token_id;
    fwrite(text, 1, text_len, stdout);
    fflush(stdout);
    return 0; /* go on */
}

int main(int argc, char **argv) {
    const char *model_name = "gemma3-270m", *backend_id = "ort-cpu", *prompt = NULL;
    size_t max_tokens = 128;
    char load_options[64] = "{}";
    LockstepOptions *opts = lockstep_options_new();
    if (opts == NULL) return fail("lockstep_options_new", LOCKSTEP_STATUS_PANIC);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        LockstepStatus st = LOCKSTEP_STATUS_OK;
        if (a[0] != '-' || a[1] != '-') { prompt = a; continue; }
        if (v == NULL) { fprintf(stderr, "stream: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--model")) model_name = v;
        else if (!strcmp(a, "--backend")) backend_id = v;
        else if (!strcmp(a, "--threads")) snprintf(load_options, sizeof load_options, "{\"threads\": %d}", atoi(v));
        else if (!strcmp(a, "--max-tokens")) max_tokens = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--temperature")) st = lockstep_options_set_temperature(opts, strtof(v, NULL));
        else if (!strcmp(a, "--top-k")) st = lockstep_options_set_top_k(opts, strtoul(v, NULL, 10));
        else if (!strcmp(a, "--top-p")) st = lockstep_options_set_top_p(opts, strtof(v, NULL));
        else if (!strcmp(a, "--min-p")) st = lockstep_options_set_min_p(opts, strtof(v, NULL));
        else if (!strcmp(a, "--repeat-penalty")) st = lockstep_options_set_repetition_penalty(opts, strtof(v, NULL));
        else if (!strcmp(a, "--seed")) st = lockstep_options_set_seed(opts, strtoull(v, NULL, 10));
        else if (!strcmp(a, "--stop")) st = lockstep_options_add_stop(opts, v);
        else { fprintf(stderr, "stream: unknown option %s\n", a); return 2; }
        if (st != LOCKSTEP_STATUS_OK) return fail(a, st);
    }
    if (prompt == NULL) { fprintf(stderr, "usage: stream [--model M] [--backend B] [--max-tokens N] ... PROMPT\n"); return 2; }
    LockstepStatus st = lockstep_options_set_max_new_tokens(opts, max_tokens);
    if (st != LOCKSTEP_STATUS_OK) return fail("--max-tokens", st);

    LockstepModel *model = NULL;
    if ((st = lockstep_model_open(model_name, load_options, &model)) != LOCKSTEP_STATUS_OK)
        return fail("lockstep_model_open", st);
    LockstepBackend *backend = NULL;
    if ((st = lockstep_backend_open(model, backend_id, &backend)) != LOCKSTEP_STATUS_OK)
        return fail("lockstep_backend_open", st);

    /* A KV budget of exactly the prompt plus the tokens to generate, as `lockstep run`. */
    uint32_t *ids = NULL;
    size_t n_ids = 0;
    if ((st = lockstep_model_tokenize(model, prompt, true, &ids, &n_ids)) != LOCKSTEP_STATUS_OK)
        return fail("lockstep_model_tokenize", st);
    lockstep_tokens_free(ids, n_ids);
    LockstepSession *session = NULL;
    if ((st = lockstep_session_new(backend, n_ids + max_tokens, &session)) != LOCKSTEP_STATUS_OK)
        return fail("lockstep_session_new", st);

    char *summary = NULL;
    st = lockstep_session_generate(session, prompt, opts, on_token, NULL, &summary);
    printf("\n");
    if (st != LOCKSTEP_STATUS_OK) return fail("lockstep_session_generate", st);
    fprintf(stderr, "%s\n", summary);

    lockstep_string_free(summary);
    lockstep_session_free(session);
    lockstep_backend_free(backend);
    lockstep_model_free(model);
    lockstep_options_free(opts);
    return 0;
}
