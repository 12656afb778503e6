//! Test-only faults: a backend wrapper that perturbs logits, to prove the suite catches
//! a wrong backend and points at the right position.

use std::sync::Arc;

use async_trait::async_trait;
use lockstep_core::{
    Backend, BackendInfo, Logits, ModelConfig, Result, Session, SessionOptions, Want,
};

/// What goes wrong. Positions are indices in the sequence of the token the logits
/// predict (the logits after `n` tokens predict position `n`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Adds `amount` to `token`'s logit at exactly `position`: one bad step.
    Boost {
        position: usize,
        token: u32,
        amount: f32,
    },
    /// Adds uniform noise in `[-amplitude, amplitude]` to every logit from `from` on.
    Noise {
        from: usize,
        amplitude: f32,
        seed: u64,
    },
}

impl Fault {
    fn apply(&self, position: usize, row: &mut [f32]) {
        match *self {
            Fault::Boost {
                position: p,
                token,
                amount,
            } => {
                if position == p {
                    row[token as usize] += amount;
                }
            }
            Fault::Noise {
                from,
                amplitude,
                seed,
            } => {
                if position >= from {
                    let base = splitmix(seed ^ (position as u64).wrapping_mul(0x9e37_79b9));
                    for (i, x) in row.iter_mut().enumerate() {
                        let r = splitmix(base ^ i as u64);
                        // 53 random bits -> [0, 1) -> [-1, 1).
                        let u = (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                        *x += amplitude * u as f32;
                    }
                }
            }
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Wraps a backend and applies a [`Fault`] to every logit row it returns (so also to
/// the generation loop's greedy steps, which go through `forward`).
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    fault: Fault,
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn Backend>, fault: Fault) -> Self {
        Self { inner, fault }
    }
}

#[async_trait]
impl Backend for FaultyBackend {
    fn info(&self) -> BackendInfo {
        let mut info = self.inner.info();
        info.id = format!("faulty-{}", info.id);
        info.precision = format!("{} + injected fault {:?}", info.precision, self.fault);
        info
    }

    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }

    async fn session(&self, opts: SessionOptions) -> Result<Box<dyn Session>> {
        Ok(Box::new(FaultySession {
            inner: self.inner.session(opts).await?,
            fault: self.fault,
        }))
    }
}

struct FaultySession {
    inner: Box<dyn Session>,
    fault: Fault,
}

#[async_trait]
impl Session for FaultySession {
    async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Logits> {
        let before = self.inner.len();
        let logits = self.inner.forward(tokens, want).await?;
        let (vocab, rows) = (logits.vocab(), logits.rows());
        // The last row predicts the position after the last token fed.
        let last_position = before + tokens.len();
        let mut data = logits.into_vec();
        for (r, row) in data.chunks_mut(vocab).enumerate() {
            self.fault.apply(last_position + 1 + r - rows, row);
        }
        Ok(Logits::new(vocab, data))
    }

    // `forward_greedy` keeps the default (forward + argmax), so greedy steps see the fault.

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        self.inner.truncate(len)
    }
}
