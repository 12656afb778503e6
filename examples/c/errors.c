/*
 * errors.c: what a caller gets for the three mistakes users make most: a model that does
 * not exist, a backend id that does not exist, and a prompt over the session's KV budget.
 * Each is one status code and one readable line; the program checks the codes.
 *
 *   ./errors gemma3-tiny
 */
#include <stdio.h>
#include <string.h>

#include "lockstep.h"

static int check(const char *what, LockstepStatus got, LockstepStatus want) {
    printf("%s: status %d: %s\n", what, (int)got, lockstep_last_error_message());
    if (got != want) {
        fprintf(stderr, "errors: %s: expected status %d, got %d\n", what, (int)want, (int)got);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *model_name = argc > 1 ? argv[1] : "gemma3-tiny";
    int failures = 0;
    LockstepModel *model = NULL;
    LockstepBackend *backend = NULL;
    LockstepSession *session = NULL;

    failures += check("missing model",
                      lockstep_model_open("/no/such/model-dir", NULL, &model),
                      LOCKSTEP_STATUS_MODEL);
    if (model != NULL) { fprintf(stderr, "errors: a failed open left a model\n"); failures++; }

    LockstepStatus st = lockstep_model_open(model_name, NULL, &model);
    if (st != LOCKSTEP_STATUS_OK) {
        fprintf(stderr, "errors: cannot open %s: %s\n", model_name, lockstep_last_error_message());
        return 1;
    }
    failures += check("unknown backend",
                      lockstep_backend_open(model, "no-such-backend", &backend),
                      LOCKSTEP_STATUS_INVALID_INPUT);

    st = lockstep_backend_open(model, "ort-cpu", &backend);
    if (st != LOCKSTEP_STATUS_OK) {
        fprintf(stderr, "errors: cannot load ort-cpu: %s\n", lockstep_last_error_message());
        return 1;
    }
    /* A budget of 8 tokens cannot take this prompt plus 16 new tokens. */
    lockstep_session_new(backend, 8, &session);
    LockstepOptions *opts = lockstep_options_new();
    lockstep_options_set_max_new_tokens(opts, 16);
    failures += check("over-budget prompt",
                      lockstep_session_generate(session, "The three primary colors are", opts,
                                                NULL, NULL, NULL),
                      LOCKSTEP_STATUS_CONTEXT_OVERFLOW);
    size_t len = 99;
    lockstep_session_len(session, &len);
    if (len != 0) { fprintf(stderr, "errors: the refused prompt left %zu tokens\n", len); failures++; }

    lockstep_options_free(opts);
    lockstep_session_free(session);
    lockstep_backend_free(backend);
    lockstep_model_free(model);
    printf("%d failed\n", failures);
    return failures == 0 ? 0 : 1;
}
