package dev.lockstep;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * lockstep from Java and Kotlin, through JNI over the C ABI (lockstep.h).
 *
 * <pre>
 * try (var model = new Lockstep.Model("gemma3-270m");
 *      var backend = model.backend("ort-cpu");
 *      var session = backend.session(256)) {
 *     String summaryJson = session.generate("The three primary colors are",
 *         new Lockstep.Options().maxNewTokens(32), (id, text) -> { System.out.print(text); return true; });
 * }
 * </pre>
 *
 * Needs liblockstep_jni (native/lockstep_jni.c) and liblockstep_ffi on java.library.path.
 * Model and Backend may be shared between threads; a Session is used by one thread at a time.
 */
public final class Lockstep {
    static {
        System.loadLibrary("lockstep_jni");
    }

    private Lockstep() {}

    /** A lockstep error: the C ABI's status code and its one-line message. */
    public static final class LockstepException extends RuntimeException {
        /** LOCKSTEP_STATUS_* of lockstep.h, e.g. 3 (invalid input), 4 (context overflow), 5 (model). */
        public final int status;

        public LockstepException(int status, String message) {
            super(message);
            this.status = status;
        }
    }

    /** Receives each generated token; return false to stop (the run ends "cancelled"). */
    @FunctionalInterface
    public interface TokenListener {
        boolean onToken(int id, String text);
    }

    /** The generation loop's options, with its defaults. */
    public static final class Options {
        int maxNewTokens = 256;
        float temperature = 0f;
        int topK = 0;
        float topP = 1f;
        float minP = 0f;
        float repetitionPenalty = 1f;
        long seed = 0;
        final List<String> stop = new ArrayList<>();

        public Options maxNewTokens(int n) { maxNewTokens = n; return this; }
        public Options temperature(float t) { temperature = t; return this; }
        /** 0 turns top-k off. */
        public Options topK(int k) { topK = k; return this; }
        public Options topP(float p) { topP = p; return this; }
        public Options minP(float p) { minP = p; return this; }
        public Options repetitionPenalty(float r) { repetitionPenalty = r; return this; }
        public Options seed(long s) { seed = s; return this; }
        public Options stop(String s) { stop.add(s); return this; }
    }

    /** NUL-terminated UTF-8, as the C ABI takes strings (JNI's own strings are modified UTF-8). */
    static byte[] c(String s) {
        if (s == null) return null;
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        byte[] out = new byte[b.length + 1];
        System.arraycopy(b, 0, out, 0, b.length);
        return out;
    }

    /** Called by the native glue with each token's UTF-8 bytes. */
    static boolean deliver(TokenListener l, int id, byte[] utf8) {
        return l.onToken(id, new String(utf8, StandardCharsets.UTF_8));
    }

    /** A converted model: a built-in name (fetched on first use) or a converted directory. */
    public static final class Model implements AutoCloseable {
        long handle;

        public Model(String nameOrDir) { this(nameOrDir, null); }

        /** @param loadOptionsJson null or e.g. {"threads": 2} (see lockstep_model_open). */
        public Model(String nameOrDir, String loadOptionsJson) {
            handle = modelOpen(c(nameOrDir), c(loadOptionsJson));
        }

        public Backend backend(String id) { return new Backend(backendOpen(handle, c(id))); }

        @Override public void close() { modelFree(handle); handle = 0; }
    }

    /** A model loaded on one backend ("ort-cpu", "gpu", ...). Thread-safe. */
    public static final class Backend implements AutoCloseable {
        long handle;

        Backend(long h) { handle = h; }

        /** {"id", "runtime", "device", "precision", ...} */
        public String infoJson() { return backendInfo(handle); }

        /** A session with a KV budget of maxTokens (prompt plus generated). */
        public Session session(long maxTokens) { return new Session(sessionNew(handle, maxTokens)); }

        @Override public void close() { backendFree(handle); handle = 0; }
    }

    /** One conversation's KV cache. One thread at a time. */
    public static final class Session implements AutoCloseable {
        long handle;

        Session(long h) { handle = h; }

        /** Streams tokens to listener (may be null); returns the run's summary JSON. */
        public String generate(String prompt, Options o, TokenListener listener) {
            return sessionGenerate(handle, c(prompt), o.maxNewTokens, o.temperature, o.topK, o.topP,
                o.minP, o.repetitionPenalty, o.seed, o.stop.stream().map(Lockstep::c).toArray(byte[][]::new),
                listener);
        }

        public long length() { return sessionLen(handle); }

        /** Rewinds: forgets every token from position len on. */
        public void truncate(long len) { sessionTruncate(handle, len); }

        @Override public void close() { sessionFree(handle); handle = 0; }
    }

    static native long modelOpen(byte[] name, byte[] loadOptionsJson);
    static native void modelFree(long model);
    static native long backendOpen(long model, byte[] id);
    static native String backendInfo(long backend);
    static native void backendFree(long backend);
    static native long sessionNew(long backend, long maxTokens);
    static native long sessionLen(long session);
    static native void sessionTruncate(long session, long len);
    static native String sessionGenerate(long session, byte[] prompt, int maxNewTokens, float temperature,
        int topK, float topP, float minP, float repetitionPenalty, long seed, byte[][] stop, TokenListener l);
    static native void sessionFree(long session);
}
