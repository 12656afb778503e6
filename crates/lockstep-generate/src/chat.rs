//! Multi-turn chat that keeps the KV cache between turns.

use futures::StreamExt;
use lockstep_core::{Error, Result, Session};

use crate::generate::{collect, EventStream, Run};
use crate::{Event, GenerateOptions, Generator, Message, Output, StopReason};

/// One exchange: the user's message and the model's reply, with where their tokens sit
/// in the conversation.
#[derive(Debug, Clone)]
struct Turn {
    /// History length before this turn's tokens (including the previous reply's
    /// `<end_of_turn>` closing): rewinding the turn truncates to here.
    start: usize,
    /// History length after `<start_of_turn>model\n`: the reply starts here.
    prompt_end: usize,
    user: String,
    reply: String,
    stop: Option<StopReason>,
}

/// A conversation in the Gemma chat format on one session.
///
/// Each turn feeds only what the session does not hold yet: the previous reply's last
/// token (a sampled token is fed only by the step after it), then
/// `<end_of_turn>\n<start_of_turn>user\n{message}<end_of_turn>\n<start_of_turn>model\n`.
/// The model's own reply tokens stay in the cache as sampled: they are not re-tokenized
/// from the reply text, which may tokenize differently; a reply cut by a stop string
/// keeps its tokens in the cache, stop string included.
pub struct Chat {
    generator: Generator,
    session: Box<dyn Session>,
    system: Option<String>,
    /// Every token of the conversation. The session's cache always holds a prefix of it.
    history: Vec<u32>,
    turns: Vec<Turn>,
}

impl Chat {
    /// Starts a conversation on `session`, emptying it first.
    pub fn new(generator: Generator, mut session: Box<dyn Session>) -> Result<Self> {
        if !session.is_empty() {
            session.truncate(0)?;
        }
        Ok(Self {
            generator,
            session,
            system: None,
            history: Vec::new(),
            turns: Vec::new(),
        })
    }

    /// A system prompt, folded into the first user turn as Gemma's template does. It
    /// takes effect when the first turn is sent (or re-sent after a full rewind).
    pub fn with_system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Sends a user message and streams the reply.
    pub fn send_stream(&mut self, user: &str, opts: GenerateOptions) -> Result<EventStream<'_>> {
        opts.validate()?;
        let eos = &self.generator.config().eos_token_ids;
        if let Some(last) = self.turns.last() {
            // An EOS ends the reply but is never fed; the template closes the turn below.
            if self.history.len() > last.prompt_end
                && self.history.last().is_some_and(|t| eos.contains(t))
            {
                self.history.pop();
            }
        }
        let tok = self.generator.tokenizer();
        let new = if self.turns.is_empty() {
            let mut msgs = Vec::new();
            if let Some(s) = &self.system {
                msgs.push(Message::system(s.clone()));
            }
            msgs.push(Message::user(user));
            tok.encode(&tok.apply_chat_template(&msgs, true)?)?
        } else {
            tok.encode_raw(&format!(
                "<end_of_turn>\n<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n",
                user.trim()
            ))?
        };
        let start = self.history.len();
        if self.session.len() > start {
            // Only after a cancelled step: the cache may be ahead of what was recorded.
            self.session.truncate(start)?;
        }
        let fed = self.session.len();
        let mut feed = self.history[fed..].to_vec();
        feed.extend_from_slice(&new);
        let run = self
            .generator
            .start(self.session.as_mut(), feed, &self.history[..fed], opts)?;
        self.history.extend_from_slice(&new);
        self.turns.push(Turn {
            start,
            prompt_end: self.history.len(),
            user: user.to_string(),
            reply: String::new(),
            stop: None,
        });
        Ok(record(
            run,
            &mut self.history,
            self.turns.last_mut().expect("just pushed"),
        ))
    }

    /// Generates the last reply again (with other options, e.g. another seed).
    pub fn regenerate_stream(&mut self, opts: GenerateOptions) -> Result<EventStream<'_>> {
        opts.validate()?;
        let Some(turn) = self.turns.last() else {
            return Err(Error::InvalidInput(
                "nothing to regenerate: send a message first".into(),
            ));
        };
        let end = turn.prompt_end;
        // The step needs at least one token to feed, so un-feed the prompt's last one.
        if self.session.len() >= end {
            self.session.truncate(end - 1)?;
        }
        let fed = self.session.len();
        let feed = self.history[fed..end].to_vec();
        let run = self
            .generator
            .start(self.session.as_mut(), feed, &self.history[..fed], opts)?;
        self.history.truncate(end);
        let turn = self.turns.last_mut().expect("checked above");
        turn.reply.clear();
        turn.stop = None;
        Ok(record(run, &mut self.history, turn))
    }

    /// Removes the last exchange (message and reply), rewinding the session, and returns
    /// the user's message so that it can be edited and sent again. `None` when empty.
    pub fn rewind(&mut self) -> Result<Option<String>> {
        let Some(turn) = self.turns.pop() else {
            return Ok(None);
        };
        self.history.truncate(turn.start);
        if self.session.len() > turn.start {
            self.session.truncate(turn.start)?;
        }
        Ok(Some(turn.user))
    }

    /// Blocking [`send_stream`](Self::send_stream), collected.
    pub fn send(&mut self, user: &str, opts: GenerateOptions) -> Result<Output> {
        futures::executor::block_on(collect(self.send_stream(user, opts)?))
    }

    pub async fn send_async(&mut self, user: &str, opts: GenerateOptions) -> Result<Output> {
        collect(self.send_stream(user, opts)?).await
    }

    /// Blocking [`regenerate_stream`](Self::regenerate_stream), collected.
    pub fn regenerate(&mut self, opts: GenerateOptions) -> Result<Output> {
        futures::executor::block_on(collect(self.regenerate_stream(opts)?))
    }

    /// The conversation as messages (replies as streamed, stop strings excluded).
    pub fn messages(&self) -> Vec<Message> {
        let mut out: Vec<Message> = self
            .system
            .iter()
            .map(|s| Message::system(s.clone()))
            .collect();
        for t in &self.turns {
            out.push(Message::user(t.user.clone()));
            out.push(Message::assistant(t.reply.clone()));
        }
        out
    }

    /// Why the last reply ended; `None` before any reply or while one is streaming.
    pub fn last_stop(&self) -> Option<&StopReason> {
        self.turns.last().and_then(|t| t.stop.as_ref())
    }

    /// Every token of the conversation, including a last sampled one not fed yet.
    pub fn tokens(&self) -> &[u32] {
        &self.history
    }

    pub fn session(&self) -> &dyn Session {
        self.session.as_ref()
    }

    pub fn into_session(self) -> Box<dyn Session> {
        self.session
    }
}

/// Records each streamed token into the history and the reply, so that a dropped stream
/// still leaves the chat consistent with the session.
fn record<'a>(run: Run<'a>, history: &'a mut Vec<u32>, turn: &'a mut Turn) -> EventStream<'a> {
    run.into_stream()
        .map(move |ev| {
            match &ev {
                Ok(Event::Token { id, text }) => {
                    history.push(*id);
                    turn.reply.push_str(text);
                }
                Ok(Event::Done(s)) => turn.stop = Some(s.stop.clone()),
                Err(_) => {}
            }
            ev
        })
        .boxed()
}
