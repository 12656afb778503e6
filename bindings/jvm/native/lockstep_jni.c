/*
 * lockstep_jni.c: the JNI glue between dev.lockstep.Lockstep (Java, Kotlin) and the C ABI.
 * Every C status other than OK becomes a LockstepException(status, message).
 * Strings cross as NUL-terminated UTF-8 byte arrays (JNI's own strings are modified UTF-8).
 */
#include <jni.h>
#include <stdint.h>
#include <stdlib.h>

#include "lockstep.h"

static void throw_status(JNIEnv *env, LockstepStatus st) {
    jclass cls = (*env)->FindClass(env, "dev/lockstep/Lockstep$LockstepException");
    if (cls == NULL) return;
    jmethodID init = (*env)->GetMethodID(env, cls, "<init>", "(ILjava/lang/String;)V");
    jstring msg = (*env)->NewStringUTF(env, lockstep_last_error_message());
    jobject ex = (*env)->NewObject(env, cls, init, (jint)st, msg);
    (*env)->Throw(env, (jthrowable)ex);
}

/* A Java byte[] (NUL-terminated UTF-8) as a C string; NULL stays NULL. */
static char *cstr(JNIEnv *env, jbyteArray a) {
    return a == NULL ? NULL : (char *)(*env)->GetByteArrayElements(env, a, NULL);
}

static void release(JNIEnv *env, jbyteArray a, char *s) {
    if (a != NULL) (*env)->ReleaseByteArrayElements(env, a, (jbyte *)s, JNI_ABORT);
}

static jstring take_string(JNIEnv *env, char *s) {
    jstring out = (*env)->NewStringUTF(env, s); /* JSON from lockstep is ASCII-escaped enough for this */
    lockstep_string_free(s);
    return out;
}

JNIEXPORT jlong JNICALL Java_dev_lockstep_Lockstep_modelOpen(JNIEnv *env, jclass c, jbyteArray name, jbyteArray opts) {
    (void)c;
    char *n = cstr(env, name), *o = cstr(env, opts);
    LockstepModel *m = NULL;
    LockstepStatus st = lockstep_model_open(n, o, &m);
    release(env, name, n);
    release(env, opts, o);
    if (st != LOCKSTEP_STATUS_OK) throw_status(env, st);
    return (jlong)(intptr_t)m;
}

JNIEXPORT void JNICALL Java_dev_lockstep_Lockstep_modelFree(JNIEnv *env, jclass c, jlong m) {
    (void)env; (void)c;
    lockstep_model_free((LockstepModel *)(intptr_t)m);
}

JNIEXPORT jlong JNICALL Java_dev_lockstep_Lockstep_backendOpen(JNIEnv *env, jclass c, jlong m, jbyteArray id) {
    (void)c;
    char *i = cstr(env, id);
    LockstepBackend *b = NULL;
    LockstepStatus st = lockstep_backend_open((LockstepModel *)(intptr_t)m, i, &b);
    release(env, id, i);
    if (st != LOCKSTEP_STATUS_OK) throw_status(env, st);
    return (jlong)(intptr_t)b;
}

JNIEXPORT jstring JNICALL Java_dev_lockstep_Lockstep_backendInfo(JNIEnv *env, jclass c, jlong b) {
    (void)c;
    char *json = NULL;
    LockstepStatus st = lockstep_backend_info_json((LockstepBackend *)(intptr_t)b, &json);
    if (st != LOCKSTEP_STATUS_OK) { throw_status(env, st); return NULL; }
    return take_string(env, json);
}

JNIEXPORT void JNICALL Java_dev_lockstep_Lockstep_backendFree(JNIEnv *env, jclass c, jlong b) {
    (void)env; (void)c;
    lockstep_backend_free((LockstepBackend *)(intptr_t)b);
}

JNIEXPORT jlong JNICALL Java_dev_lockstep_Lockstep_sessionNew(JNIEnv *env, jclass c, jlong b, jlong max) {
    (void)c;
    LockstepSession *s = NULL;
    LockstepStatus st = lockstep_session_new((LockstepBackend *)(intptr_t)b, (size_t)max, &s);
    if (st != LOCKSTEP_STATUS_OK) throw_status(env, st);
    return (jlong)(intptr_t)s;
}

JNIEXPORT jlong JNICALL Java_dev_lockstep_Lockstep_sessionLen(JNIEnv *env, jclass c, jlong s) {
    (void)c;
    size_t n = 0;
    LockstepStatus st = lockstep_session_len((LockstepSession *)(intptr_t)s, &n);
    if (st != LOCKSTEP_STATUS_OK) throw_status(env, st);
    return (jlong)n;
}

JNIEXPORT void JNICALL Java_dev_lockstep_Lockstep_sessionTruncate(JNIEnv *env, jclass c, jlong s, jlong len) {
    (void)c;
    LockstepStatus st = lockstep_session_truncate((LockstepSession *)(intptr_t)s, (size_t)len);
    if (st != LOCKSTEP_STATUS_OK) throw_status(env, st);
}

typedef struct {
    JNIEnv *env;
    jobject listener;
    jclass cls;
    jmethodID deliver;
} Listener;

static int32_t on_token(void *user_data, uint32_t id, const char *text, size_t len) {
    Listener *l = user_data;
    JNIEnv *env = l->env;
    jbyteArray bytes = (*env)->NewByteArray(env, (jsize)len);
    (*env)->SetByteArrayRegion(env, bytes, 0, (jsize)len, (const jbyte *)text);
    jboolean go_on = (*env)->CallStaticBooleanMethod(env, l->cls, l->deliver, l->listener, (jint)id, bytes);
    (*env)->DeleteLocalRef(env, bytes);
    /* A Java exception in the listener stops the run; it is rethrown when generate returns. */
    return (*env)->ExceptionCheck(env) || !go_on;
}

JNIEXPORT jstring JNICALL Java_dev_lockstep_Lockstep_sessionGenerate(
    JNIEnv *env, jclass cls, jlong s, jbyteArray prompt, jint max_new, jfloat temperature, jint top_k,
    jfloat top_p, jfloat min_p, jfloat repetition_penalty, jlong seed, jobjectArray stop, jobject listener) {
    LockstepOptions *o = lockstep_options_new();
    LockstepStatus st = LOCKSTEP_STATUS_OK;
    if (o == NULL) { throw_status(env, LOCKSTEP_STATUS_PANIC); return NULL; }
    lockstep_options_set_max_new_tokens(o, (size_t)(max_new < 0 ? 0 : max_new));
    lockstep_options_set_temperature(o, temperature);
    lockstep_options_set_top_k(o, (size_t)(top_k < 0 ? 0 : top_k));
    lockstep_options_set_top_p(o, top_p);
    lockstep_options_set_min_p(o, min_p);
    lockstep_options_set_repetition_penalty(o, repetition_penalty);
    lockstep_options_set_seed(o, (uint64_t)seed);
    jsize n_stop = stop == NULL ? 0 : (*env)->GetArrayLength(env, stop);
    for (jsize i = 0; i < n_stop && st == LOCKSTEP_STATUS_OK; i++) {
        jbyteArray a = (jbyteArray)(*env)->GetObjectArrayElement(env, stop, i);
        char *text = cstr(env, a);
        st = lockstep_options_add_stop(o, text);
        release(env, a, text);
    }
    if (st != LOCKSTEP_STATUS_OK) { lockstep_options_free(o); throw_status(env, st); return NULL; }

    Listener l = {env, listener, cls, NULL};
    l.deliver = (*env)->GetStaticMethodID(env, cls, "deliver", "(Ldev/lockstep/Lockstep$TokenListener;I[B)Z");
    char *p = cstr(env, prompt), *summary = NULL;
    st = lockstep_session_generate((LockstepSession *)(intptr_t)s, p, o,
                                   listener != NULL ? on_token : NULL, &l, &summary);
    release(env, prompt, p);
    lockstep_options_free(o);
    if ((*env)->ExceptionCheck(env)) { lockstep_string_free(summary); return NULL; }
    if (st != LOCKSTEP_STATUS_OK) { throw_status(env, st); return NULL; }
    return take_string(env, summary);
}

JNIEXPORT void JNICALL Java_dev_lockstep_Lockstep_sessionFree(JNIEnv *env, jclass c, jlong s) {
    (void)env; (void)c;
    lockstep_session_free((LockstepSession *)(intptr_t)s);
}
