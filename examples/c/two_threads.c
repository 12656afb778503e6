/*
 * two_threads.c: one backend, two sessions, two threads at once. Each thread's text must
 * equal what the same prompt gives when run alone: sessions share the loaded model, never
 * their KV caches.
 *
 *   ./two_threads gemma3-tiny ort-cpu
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lockstep.h"

typedef struct {
    LockstepBackend *backend;
    const char *prompt;
    char text[4096];
    size_t len;
    LockstepStatus status;
    char error[512];
} Job;

static int32_t collect(void *user_data, uint32_t id, const char *text, size_t text_len) {
    Job *job = user_data;
    (void)id;
    if (job->len + text_len >= sizeof job->text) return 1; /* stop: buffer full */
    memcpy(job->text + job->len, text, text_len);
    job->len += text_len;
    job->text[job->len] = '\0';
    return 0;
}

static void *run(void *arg) {
    Job *job = arg;
    LockstepSession *session = NULL;
    LockstepOptions *opts = lockstep_options_new();
    lockstep_options_set_max_new_tokens(opts, 24);
    job->len = 0;
    job->text[0] = '\0';
    job->status = lockstep_session_new(job->backend, 64, &session);
    if (job->status == LOCKSTEP_STATUS_OK)
        job->status = lockstep_session_generate(session, job->prompt, opts, collect, job, NULL);
    /* The error message is per thread: copy it here, on the thread that failed. */
    snprintf(job->error, sizeof job->error, "%s", lockstep_last_error_message());
    lockstep_session_free(session);
    lockstep_options_free(opts);
    return NULL;
}

int main(int argc, char **argv) {
    const char *model_name = argc > 1 ? argv[1] : "gemma3-tiny";
    const char *backend_id = argc > 2 ? argv[2] : "ort-cpu";
    const char *prompts[2] = {"The three primary colors are", "Water boils at a temperature of"};
    LockstepModel *model = NULL;
    LockstepBackend *backend = NULL;
    if (lockstep_model_open(model_name, NULL, &model) != LOCKSTEP_STATUS_OK ||
        lockstep_backend_open(model, backend_id, &backend) != LOCKSTEP_STATUS_OK) {
        fprintf(stderr, "two_threads: %s\n", lockstep_last_error_message());
        return 1;
    }
    lockstep_model_free(model); /* the backend keeps what it needs */

    Job alone[2], together[2];
    for (int i = 0; i < 2; i++) {
        alone[i] = (Job){.backend = backend, .prompt = prompts[i]};
        together[i] = alone[i];
        run(&alone[i]);
    }
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, run, &together[i]);
    for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);

    int failures = 0;
    for (int i = 0; i < 2; i++) {
        if (alone[i].status != LOCKSTEP_STATUS_OK || together[i].status != LOCKSTEP_STATUS_OK) {
            fprintf(stderr, "two_threads: prompt %d failed: %s %s\n", i, alone[i].error, together[i].error);
            failures++;
            continue;
        }
        int same = strcmp(alone[i].text, together[i].text) == 0;
        printf("thread %d: %s: %s\n", i, same ? "same" : "DIFFERENT", together[i].text);
        if (!same) {
            fprintf(stderr, "two_threads: alone: %s\n", alone[i].text);
            failures++;
        }
    }
    lockstep_backend_free(backend);
    printf("%d failed\n", failures);
    return failures == 0 ? 0 : 1;
}
