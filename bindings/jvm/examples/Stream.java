import dev.lockstep.Lockstep;

/**
 * Stream.java: `lockstep run` from Java (Kotlin calls the same class). Streams the
 * continuation to stdout, the summary JSON to stderr, then shows the three common errors.
 *
 *   java -Djava.library.path=DIR -cp CLASSES Stream gemma3-tiny ort-cpu 24 "The three primary colors are"
 */
public class Stream {
    public static void main(String[] args) {
        String model = args[0], backendId = args[1], prompt = args[3];
        int maxTokens = Integer.parseInt(args[2]);
        try (var m = new Lockstep.Model(model);
             var backend = m.backend(backendId);
             var session = backend.session(64)) {
            String summary = session.generate(prompt, new Lockstep.Options().maxNewTokens(maxTokens),
                (id, text) -> { System.out.print(text); System.out.flush(); return true; });
            System.out.println();
            System.err.println(summary);

            try { new Lockstep.Model("/no/such/model-dir"); }
            catch (Lockstep.LockstepException e) { System.err.println("missing model: status " + e.status + ": " + e.getMessage()); }
            try { m.backend("no-such-backend"); }
            catch (Lockstep.LockstepException e) { System.err.println("unknown backend: status " + e.status + ": " + e.getMessage()); }
            try (var small = backend.session(8)) { small.generate(prompt, new Lockstep.Options().maxNewTokens(16), null); }
            catch (Lockstep.LockstepException e) { System.err.println("over-budget prompt: status " + e.status + ": " + e.getMessage()); }
        }
    }
}
