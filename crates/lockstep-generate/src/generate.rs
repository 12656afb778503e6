//! The generation loop: prompt in, a stream of token events out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, StreamExt};
use lockstep_core::{Backend, Error, ModelConfig, Result, Session, SessionOptions, Want};

use crate::detok::Detokenizer;
use crate::sampling::{Sampler, SamplingParams, TokenSet};
use crate::speculate::{Speculation, SpeculationStats, Speculator};
use crate::stop::StopMatcher;
use crate::{Chat, Tokenizer};

/// What to generate from: text (tokenized by the generator) or ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Encoded with a BOS when the session is empty, without one when it continues.
    Text(String),
    /// Fed as given.
    Tokens(Vec<u32>),
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_string())
    }
}
impl From<String> for Prompt {
    fn from(s: String) -> Self {
        Prompt::Text(s)
    }
}
impl From<&String> for Prompt {
    fn from(s: &String) -> Self {
        Prompt::Text(s.clone())
    }
}
impl From<Vec<u32>> for Prompt {
    fn from(t: Vec<u32>) -> Self {
        Prompt::Tokens(t)
    }
}
impl From<&[u32]> for Prompt {
    fn from(t: &[u32]) -> Self {
        Prompt::Tokens(t.to_vec())
    }
}

/// Stops a running generation from anywhere (another thread, a Ctrl-C handler). The loop
/// checks it before each model step and then ends with [`StopReason::Cancelled`].
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything about one generation call.
///
/// ```
/// use lockstep_generate::GenerateOptions;
/// let o = GenerateOptions::new().max_new_tokens(64).temperature(0.7).top_p(0.9).seed(7).stop("\n\n");
/// assert!(o.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// At least 1; EOS counts as a generated token.
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Text that ends generation; it is never emitted, nor is anything after it.
    pub stop: Vec<String>,
    pub cancel: Option<CancelToken>,
    /// Speculative decoding: draft tokens, verify them in one step. `None` (the default)
    /// decodes one token per step. Either way the tokens follow the same rule; only the
    /// numerics of a many-position step can differ (see [`Speculation`]).
    pub speculation: Option<Speculation>,
}

impl Default for GenerateOptions {
    /// 256 new tokens, greedy, no stop strings, no speculation.
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            cancel: None,
            speculation: None,
        }
    }
}

impl GenerateOptions {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }
    pub fn sampling(mut self, s: SamplingParams) -> Self {
        self.sampling = s;
        self
    }
    pub fn temperature(mut self, t: f32) -> Self {
        self.sampling.temperature = t;
        self
    }
    pub fn top_k(mut self, k: usize) -> Self {
        self.sampling.top_k = Some(k);
        self
    }
    pub fn top_p(mut self, p: f32) -> Self {
        self.sampling.top_p = p;
        self
    }
    pub fn min_p(mut self, p: f32) -> Self {
        self.sampling.min_p = p;
        self
    }
    pub fn repetition_penalty(mut self, penalty: f32) -> Self {
        self.sampling.repetition_penalty = penalty;
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.sampling.seed = seed;
        self
    }
    /// Adds one stop string.
    pub fn stop(mut self, s: impl Into<String>) -> Self {
        self.stop.push(s.into());
        self
    }
    pub fn cancel_token(mut self, c: CancelToken) -> Self {
        self.cancel = Some(c);
        self
    }
    /// Turns speculative decoding on with these settings.
    pub fn speculate(mut self, s: Speculation) -> Self {
        self.speculation = Some(s);
        self
    }

    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == 0 {
            return Err(Error::InvalidInput(
                "max new tokens must be at least 1".into(),
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(Error::InvalidInput(
                "a stop string must not be empty".into(),
            ));
        }
        if let Some(s) = &self.speculation {
            s.validate()?;
        }
        self.sampling.validate()
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The model emitted one of the config's EOS ids (this one).
    Eos(u32),
    /// This stop string appeared in the text.
    StopString(String),
    MaxTokens,
    /// A [`CancelToken`] was triggered.
    Cancelled,
}

/// Counts and timings of one generation. Times cover only the loop's own work (model
/// steps, sampling, detokenizing), not the time the consumer took between events.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Tokens fed in the prefill step.
    pub prompt_tokens: usize,
    /// Tokens sampled, EOS included.
    pub generated_tokens: usize,
    /// From the first poll to the first token.
    pub time_to_first_token: Duration,
    /// The prefill step (one forward over the prompt) and the first sample.
    pub prefill_time: Duration,
    /// Every later step.
    pub decode_time: Duration,
    /// Model steps after the prefill step (one per token without speculation).
    pub decode_steps: usize,
    /// Drafts and acceptance, when speculation was on.
    pub speculation: Option<SpeculationStats>,
    pub stop: StopReason,
}

impl Stats {
    pub fn prefill_tokens_per_second(&self) -> Option<f64> {
        rate(self.prompt_tokens, self.prefill_time)
    }
    /// Tokens after the first, per second of decode steps.
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        rate(self.generated_tokens.saturating_sub(1), self.decode_time)
    }
    /// Tokens after the first per decode step: 1 without speculation.
    pub fn tokens_per_step(&self) -> Option<f64> {
        (self.decode_steps > 0)
            .then(|| self.generated_tokens.saturating_sub(1) as f64 / self.decode_steps as f64)
    }
}

fn rate(n: usize, t: Duration) -> Option<f64> {
    (n > 0 && !t.is_zero()).then(|| n as f64 / t.as_secs_f64())
}

/// One item of a generation stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// One sampled token and the text it released. Concatenating every `text` gives the
    /// output; it may be empty (a character still missing bytes, text that may be the
    /// start of a stop string, or EOS).
    Token { id: u32, text: String },
    /// The last event.
    Done(Stats),
}

/// A stream of events; `?`-free to consume: `while let Some(ev) = s.next().await`.
pub type EventStream<'s> = BoxStream<'s, Result<Event>>;

/// The collected result of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub text: String,
    /// Every sampled id, EOS included.
    pub tokens: Vec<u32>,
    pub stats: Stats,
}

/// Drives any [`Backend`] through the same loop. Cheap to clone.
#[derive(Clone)]
pub struct Generator {
    backend: Arc<dyn Backend>,
    tokenizer: Arc<Tokenizer>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("backend", &self.backend.info())
            .finish()
    }
}

impl Generator {
    pub fn new(backend: Arc<dyn Backend>, tokenizer: Tokenizer) -> Self {
        Self {
            backend,
            tokenizer: Arc::new(tokenizer),
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn config(&self) -> &ModelConfig {
        self.backend.config()
    }

    /// A new session whose KV budget is `max_tokens` (prompt plus generated, all turns).
    pub async fn session(&self, max_tokens: usize) -> Result<Box<dyn Session>> {
        self.backend
            .session(SessionOptions::with_max_tokens(max_tokens))
            .await
    }

    /// A multi-turn chat that keeps its KV cache in `session` between turns.
    pub fn chat(&self, session: Box<dyn Session>) -> Result<Chat> {
        Chat::new(self.clone(), session)
    }

    /// Starts generating after whatever `session` already holds. Every check (options,
    /// empty prompt, ids outside the vocabulary, KV budget, context length) happens here,
    /// before any model work. Dropping the stream stops generation; the session then
    /// holds exactly the tokens that were fed (the prompt and every emitted token but
    /// the last).
    pub fn generate_stream<'s>(
        &self,
        session: &'s mut dyn Session,
        prompt: impl Into<Prompt>,
        opts: GenerateOptions,
    ) -> Result<EventStream<'s>> {
        let tokens = match prompt.into() {
            // A blank text would become `[<bos>]` alone and generate text nobody asked
            // for (an empty input box); `Prompt::Tokens(vec![bos])` still does it on purpose.
            Prompt::Text(t) if session.is_empty() && t.trim().is_empty() => {
                return Err(Error::InvalidInput(
                    "the prompt text is empty or only whitespace: give some text (or the BOS token as a token prompt to generate from nothing)".into(),
                ))
            }
            Prompt::Text(t) if session.is_empty() => self.tokenizer.encode(&t)?,
            Prompt::Text(t) => self.tokenizer.encode_raw(&t)?,
            Prompt::Tokens(t) => t,
        };
        Ok(self.start(session, tokens, &[], opts)?.into_stream())
    }

    /// Runs to the end and collects the output.
    pub async fn generate_async(
        &self,
        session: &mut dyn Session,
        prompt: impl Into<Prompt>,
        opts: GenerateOptions,
    ) -> Result<Output> {
        collect(self.generate_stream(session, prompt, opts)?).await
    }

    /// Blocking [`generate_async`](Self::generate_async), for code with no async runtime.
    /// Do not call it from inside an async task.
    pub fn generate(
        &self,
        session: &mut dyn Session,
        prompt: impl Into<Prompt>,
        opts: GenerateOptions,
    ) -> Result<Output> {
        futures::executor::block_on(self.generate_async(session, prompt, opts))
    }

    /// Checks everything and builds the loop's state. `context` is what the session
    /// already holds, when known (the chat knows it): it counts for the repetition penalty.
    pub(crate) fn start<'s>(
        &self,
        session: &'s mut dyn Session,
        prompt: Vec<u32>,
        context: &[u32],
        opts: GenerateOptions,
    ) -> Result<Run<'s>> {
        opts.validate()?;
        let config = self.backend.config();
        if prompt.is_empty() {
            return Err(Error::InvalidInput(
                "the prompt is empty: give at least one token".into(),
            ));
        }
        if let Some((i, id)) = prompt
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= config.vocab_size)
        {
            return Err(Error::InvalidInput(format!(
                "prompt token {i} is id {id}, outside the model's vocabulary of {} ids",
                config.vocab_size
            )));
        }
        let needed = session.len() + prompt.len() + opts.max_new_tokens;
        for (limit, limit_name) in [
            (session.max_tokens(), "the session's KV budget"),
            (config.context_length, "the model's context length"),
        ] {
            if needed > limit {
                return Err(Error::ContextOverflow {
                    needed,
                    limit,
                    limit_name,
                });
            }
        }
        let mut seen = TokenSet::new();
        seen.extend(context.iter().copied());
        seen.extend(prompt.iter().copied());
        let sp = &opts.sampling;
        // A penalty changes the argmax, so it needs the logits on the host.
        let device_greedy = sp.is_greedy() && sp.repetition_penalty == 1.0;
        let speculator = opts.speculation.as_ref().map(Speculator::new).transpose()?;
        // The drafter looks things up in everything the session holds, when known.
        let history = if speculator.is_some() {
            [context, &prompt].concat()
        } else {
            Vec::new()
        };
        Ok(Run {
            session,
            tokenizer: self.tokenizer.clone(),
            vocab: config.vocab_size,
            eos: config.eos_token_ids.clone(),
            sampler: Sampler::new(opts.sampling.clone())?,
            device_greedy,
            seen,
            detok: Detokenizer::new(),
            stop: StopMatcher::new(opts.stop),
            max_new: opts.max_new_tokens,
            cancel: opts.cancel,
            prompt_len: prompt.len(),
            feed: prompt,
            generated: 0,
            queue: VecDeque::new(),
            emitted_len: None,
            finished: false,
            started: None,
            ttft: Duration::ZERO,
            prefill_time: Duration::ZERO,
            decode_time: Duration::ZERO,
            decode_steps: 0,
            speculator,
            history,
        })
    }
}

pub(crate) async fn collect(mut stream: EventStream<'_>) -> Result<Output> {
    let (mut text, mut tokens) = (String::new(), Vec::new());
    while let Some(ev) = stream.next().await {
        match ev? {
            Event::Token { id, text: t } => {
                tokens.push(id);
                text += &t;
            }
            Event::Done(stats) => {
                return Ok(Output {
                    text,
                    tokens,
                    stats,
                })
            }
        }
    }
    Err(Error::Runtime(
        "generation ended without final stats".into(),
    ))
}

/// The loop's state between events.
pub(crate) struct Run<'s> {
    session: &'s mut dyn Session,
    tokenizer: Arc<Tokenizer>,
    vocab: usize,
    eos: Vec<u32>,
    sampler: Sampler,
    device_greedy: bool,
    seen: TokenSet,
    detok: Detokenizer,
    stop: StopMatcher,
    max_new: usize,
    cancel: Option<CancelToken>,
    prompt_len: usize,
    /// What the next model step feeds: the prompt, then each step's last picked token.
    feed: Vec<u32>,
    generated: usize,
    /// Events a step produced beyond the one it returned (a speculative step picks
    /// several tokens; `Done` follows the last token), each with the session length that
    /// is consistent once it has been delivered.
    queue: VecDeque<(Event, usize)>,
    /// The session length consistent with the events delivered so far, while the
    /// session holds tokens of events still queued.
    emitted_len: Option<usize>,
    finished: bool,
    started: Option<Instant>,
    ttft: Duration,
    prefill_time: Duration,
    decode_time: Duration,
    decode_steps: usize,
    speculator: Option<Speculator>,
    /// Every token the session holds or will hold, when speculating: the drafter's input.
    history: Vec<u32>,
}

impl Drop for Run<'_> {
    /// A stream dropped with tokens still queued: the session forgets the tokens whose
    /// events were never delivered, so that it holds what was fed for the delivered ones.
    fn drop(&mut self) {
        if let Some(len) = self.emitted_len {
            if self.session.len() > len {
                // Nothing to report an error to; a backend that cannot truncate has
                // already failed a step.
                let _ = self.session.truncate(len);
            }
        }
    }
}

impl<'s> Run<'s> {
    pub(crate) fn into_stream(self) -> EventStream<'s> {
        // `unfold` owns the state, so no runtime is needed and dropping the stream drops
        // the state between steps: nothing runs after that.
        futures::stream::unfold(self, |mut run| async move {
            let ev = run.next_event().await?;
            Some((ev, run))
        })
        .boxed()
    }

    async fn next_event(&mut self) -> Option<Result<Event>> {
        if let Some((ev, len)) = self.queue.pop_front() {
            let more_tokens = self
                .queue
                .iter()
                .any(|(e, _)| matches!(e, Event::Token { .. }));
            self.emitted_len = more_tokens.then_some(len);
            return Some(Ok(ev));
        }
        if self.finished {
            return None;
        }
        if self.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            // Text held back for a possible stop string is dropped: it was never released.
            self.finished = true;
            return Some(Ok(Event::Done(self.stats(StopReason::Cancelled))));
        }
        let t0 = Instant::now();
        let started = *self.started.get_or_insert(t0);
        let result = self.step(t0, started).await;
        if result.is_err() {
            self.finished = true;
            self.queue.clear();
        }
        Some(result)
    }

    async fn step(&mut self, t0: Instant, started: Instant) -> Result<Event> {
        let feed = std::mem::take(&mut self.feed);
        let is_first = self.generated == 0;
        let ids = self.next_tokens(&feed, is_first).await?;
        // The session holds the step's feed up to the last pick (not fed yet); token `e`
        // of `n` is consistent with `n - 1 - e` fewer positions.
        let full = self.session.len();
        let n = ids.len();
        let mut events = Vec::with_capacity(n + 1);
        let mut reason = None;
        for (e, &id) in ids.iter().enumerate() {
            let consistent = full - (n - 1 - e);
            let (ev, r) = self.emit(id)?;
            events.push((ev, consistent));
            if r.is_some() {
                if consistent < full {
                    // Picks after the end were never emitted: forget them.
                    self.session.truncate(consistent)?;
                }
                reason = r;
                break;
            }
        }
        if reason.is_none() {
            self.feed = vec![ids[n - 1]];
        }

        let dt = t0.elapsed();
        if is_first {
            self.prefill_time = dt;
            self.ttft = started.elapsed();
        } else {
            self.decode_time += dt;
            self.decode_steps += 1;
        }
        if let Some(r) = reason {
            self.finished = true;
            let len = self.session.len();
            events.push((Event::Done(self.stats(r)), len));
        }
        let mut events = events.into_iter();
        let (first, len) = events.next().expect("a step picks at least one token");
        self.queue.extend(events);
        let more_tokens = self
            .queue
            .iter()
            .any(|(e, _)| matches!(e, Event::Token { .. }));
        self.emitted_len = more_tokens.then_some(len);
        Ok(first)
    }

    /// One picked token through EOS, detokenizing, stop strings and the token limit.
    fn emit(&mut self, id: u32) -> Result<(Event, Option<StopReason>)> {
        self.generated += 1;
        if self.speculator.is_some() {
            self.history.push(id);
        }
        let (mut text, mut reason) = (String::new(), None);
        if self.eos.contains(&id) {
            reason = Some(StopReason::Eos(id));
        } else {
            let delta = self.detok.push(&self.tokenizer, id)?;
            let (out, hit) = self.stop.push(&delta);
            text = out;
            if let Some(i) = hit {
                reason = Some(StopReason::StopString(self.stop.stops()[i].clone()));
            } else if self.generated == self.max_new {
                reason = Some(StopReason::MaxTokens);
            }
        }
        if let Some(r) = &mut reason {
            if !matches!(r, StopReason::StopString(_)) {
                // Release what was held back; a stop string may still complete in it.
                let tail = self.detok.finish(&self.tokenizer)?;
                let (out, hit) = self.stop.push(&tail);
                text += &out;
                match hit {
                    Some(i) => *r = StopReason::StopString(self.stop.stops()[i].clone()),
                    None => text += &self.stop.finish(),
                }
            }
        }
        Ok((Event::Token { id, text }, reason))
    }

    /// One model step and its picks: one token, or with speculation the accepted draft
    /// tokens and the target's next one. Every pick is added to `seen`.
    async fn next_tokens(&mut self, feed: &[u32], is_first: bool) -> Result<Vec<u32>> {
        if let (Some(spec), false) = (self.speculator.as_mut(), is_first) {
            // Never pick past the token limit, nor feed past the KV budget.
            let remaining = self.max_new - self.generated;
            let room = self
                .session
                .max_tokens()
                .saturating_sub(self.session.len() + feed.len());
            let limit = (remaining - 1).min(room);
            let draft = if limit > 0 {
                spec.draft(&self.history, limit)
            } else {
                Vec::new()
            };
            if !draft.is_empty() {
                let (sampler, seen, vocab) = (&mut self.sampler, &mut self.seen, self.vocab);
                return spec
                    .verify(&mut *self.session, feed[0], &draft, |row| {
                        if row.len() != vocab {
                            return Err(Error::Runtime(format!(
                                "the backend returned rows of {} logits, the model's vocabulary has {vocab}",
                                row.len()
                            )));
                        }
                        // The penalty sees every token before this position, the draft
                        // tokens accepted in this step included.
                        let id = sampler.sample(row, seen)?;
                        seen.insert(id);
                        Ok(id)
                    })
                    .await;
            }
        }
        let id = self.next_token(feed).await?;
        self.seen.insert(id);
        Ok(vec![id])
    }

    /// One model step: the device's argmax when greedy allows, else host sampling.
    async fn next_token(&mut self, feed: &[u32]) -> Result<u32> {
        if self.device_greedy {
            let id = self.session.forward_greedy(feed).await?;
            if id as usize >= self.vocab {
                return Err(Error::Runtime(format!(
                    "the backend's argmax returned id {id}, outside the vocabulary of {} ids",
                    self.vocab
                )));
            }
            return Ok(id);
        }
        let logits = self.session.forward(feed, Want::Last).await?;
        if logits.vocab() != self.vocab {
            return Err(Error::Runtime(format!(
                "the backend returned rows of {} logits, the model's vocabulary has {}",
                logits.vocab(),
                self.vocab
            )));
        }
        let rows = logits.rows();
        let mut row = logits.into_vec();
        if rows > 1 {
            row.drain(..(rows - 1) * self.vocab);
        }
        self.sampler.sample(&mut row, &self.seen)
    }

    fn stats(&self, stop: StopReason) -> Stats {
        Stats {
            prompt_tokens: self.prompt_len,
            generated_tokens: self.generated,
            time_to_first_token: self.ttft,
            prefill_time: self.prefill_time,
            decode_time: self.decode_time,
            decode_steps: self.decode_steps,
            speculation: self.speculator.as_ref().map(|s| s.stats().clone()),
            stop,
        }
    }
}
