//! `lockstep run` and `lockstep chat`: the shared generation loop on one backend.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;
use lockstep::{Event, Generator, Stats, StopReason};
use lockstep_core::Result;
use serde_json::json;

use crate::generate_args::{ModelArgs, SamplingArgs};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print one JSON object per line instead of text: {"token","text"} per token, then
    /// {"stats"}.
    #[arg(long)]
    pub json: bool,
    /// KV budget of the session, in tokens: the most prompt plus generated tokens it can
    /// hold, allocated up front [default: the prompt's tokens + --max-tokens].
    #[arg(long)]
    pub context: Option<usize>,
    /// The prompt; a base model continues it.
    pub prompt: String,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// A system prompt (Gemma folds it into the first user turn).
    #[arg(long)]
    pub system: Option<String>,
    /// KV budget of the whole conversation, in tokens.
    #[arg(long, default_value_t = 4096)]
    pub context: usize,
}

/// The line commands print before a session allocates: what it will take.
fn announce_session(generator: &Generator, context: usize) {
    let info = generator.backend().info();
    match lockstep::session_memory(generator, context) {
        Some(m) => eprintln!(
            "lockstep: a {context}-token session on {} allocates {} ({} in all)",
            info.id,
            m.describe(),
            lockstep_core::mib(m.total())
        ),
        None => eprintln!(
            "lockstep: a {context}-token session on {}: {} does not say what it allocates",
            info.id,
            info.runtime_label()
        ),
    }
}

fn stop_name(stop: &StopReason) -> String {
    match stop {
        StopReason::Eos(id) => format!("eos ({id})"),
        StopReason::StopString(s) => format!("stop string {s:?}"),
        StopReason::MaxTokens => "max tokens".into(),
        StopReason::Cancelled => "cancelled".into(),
    }
}

fn stats_json(stats: &Stats) -> serde_json::Value {
    json!({
        "prompt_tokens": stats.prompt_tokens,
        "generated_tokens": stats.generated_tokens,
        "time_to_first_token_ms": stats.time_to_first_token.as_secs_f64() * 1e3,
        "prefill_tokens_per_second": stats.prefill_tokens_per_second(),
        "decode_tokens_per_second": stats.decode_tokens_per_second(),
        "decode_steps": stats.decode_steps,
        "tokens_per_step": stats.tokens_per_step(),
        "speculation": stats.speculation.as_ref().map(|s| json!({
            "draft_steps": s.draft_steps,
            "drafted": s.drafted,
            "accepted": s.accepted,
            "acceptance_rate": s.acceptance_rate(),
        })),
        "stop": stop_name(&stats.stop),
    })
}

/// `, speculation: 41/60 drafted tokens accepted (68%), 2.7 tokens/step` when speculating.
fn speculation_summary(stats: &Stats) -> String {
    let Some(s) = &stats.speculation else {
        return String::new();
    };
    let rate = s
        .acceptance_rate()
        .map_or("no drafts".into(), |r| format!("{:.0}%", r * 100.0));
    let per_step = stats
        .tokens_per_step()
        .map_or("n/a".into(), |t| format!("{t:.2}"));
    format!(
        ", speculation: {}/{} drafted tokens accepted ({rate}), {per_step} tokens/step",
        s.accepted, s.drafted
    )
}

fn summary(stats: &Stats, generator: &Generator) -> String {
    let info = generator.backend().info();
    let rate = |r: Option<f64>| {
        r.map(|v| format!("{v:.1} tok/s"))
            .unwrap_or_else(|| "n/a".into())
    };
    // GPU backends: the device buffers held now, with the session alive.
    let device = generator
        .backend()
        .memory()
        .device_bytes()
        .map(|b| format!(", device buffers {}", lockstep_core::mib(b)))
        .unwrap_or_default();
    format!(
        "{} prompt tokens, {} generated, time to first token {:.0} ms, prefill {}, decode {}{}, stopped by {} [{}: {} on {}{}{device}]",
        stats.prompt_tokens,
        stats.generated_tokens,
        stats.time_to_first_token.as_secs_f64() * 1e3,
        rate(stats.prefill_tokens_per_second()),
        rate(stats.decode_tokens_per_second()),
        speculation_summary(stats),
        stop_name(&stats.stop),
        info.id,
        info.runtime_label(),
        info.device,
        info.process
            .as_deref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default(),
    )
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let opts = args.sampling.options()?;
    let (model, generator) = args.model.open_generator()?;
    let prompt_len = model.tokenizer().encode(&args.prompt)?.len();
    let needed = prompt_len + args.sampling.max_tokens;
    let budget = args.context.unwrap_or(needed);
    let context = model.config().context_length;
    if budget > context {
        return Err(lockstep_core::Error::ContextOverflow {
            needed: budget,
            limit: context,
            limit_name: "the model's context",
        });
    }
    // Checked before allocating: the loop would refuse it only after the session exists.
    if budget < needed {
        return Err(lockstep_core::Error::ContextOverflow {
            needed,
            limit: budget,
            limit_name: "--context",
        });
    }
    announce_session(&generator, budget);
    let mut session = pollster::block_on(generator.session(budget))?;
    let mut stream = generator.generate_stream(session.as_mut(), args.prompt.as_str(), opts)?;
    let mut out = std::io::stdout().lock();
    while let Some(event) = pollster::block_on(stream.next()) {
        match event? {
            Event::Token { id, text } => {
                if args.json {
                    writeln!(out, "{}", json!({ "token": id, "text": text }))
                } else {
                    write!(out, "{text}")
                }
                .and_then(|_| out.flush())
                .ok();
            }
            Event::Done(stats) => {
                if args.json {
                    let backend = generator.backend().info();
                    writeln!(
                        out,
                        "{}",
                        json!({ "stats": stats_json(&stats), "backend": backend })
                    )
                    .ok();
                } else {
                    writeln!(out).ok();
                }
                eprintln!("{}", summary(&stats, &generator));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn chat(args: ChatArgs) -> Result<ExitCode> {
    let opts = args.sampling.options()?;
    let (_model, generator) = args.model.open_generator()?;
    announce_session(&generator, args.context);
    let session = pollster::block_on(generator.session(args.context))?;
    let mut chat = generator.chat(session)?;
    if let Some(system) = &args.system {
        chat = chat.with_system(system.clone());
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("chatting with {} on {}; /undo drops the last exchange, /retry regenerates it, /exit or Ctrl-D quits", args.model.model, generator.backend().info().device);
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| lockstep_core::Error::io("cannot read stdin", "<stdin>", e))?;
        let line = line.trim();
        let stream = match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/undo" => {
                match chat.rewind()? {
                    Some(user) => eprintln!("(dropped: {user})"),
                    None => eprintln!("(nothing to undo)"),
                }
                continue;
            }
            "/retry" => chat.regenerate_stream(opts.clone())?,
            text => chat.send_stream(text, opts.clone())?,
        };
        let mut stream = stream;
        let mut out = std::io::stdout().lock();
        while let Some(event) = pollster::block_on(stream.next()) {
            match event? {
                Event::Token { text, .. } => {
                    write!(out, "{text}").and_then(|_| out.flush()).ok();
                }
                Event::Done(stats) => {
                    writeln!(out).ok();
                    if interactive {
                        eprintln!("[{}]", summary(&stats, &generator));
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
