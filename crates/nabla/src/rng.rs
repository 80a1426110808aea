//! A small, seeded, serialisable random number generator (xoshiro256++).
//!
//! nabla uses its own generator so that results are reproducible across platforms and
//! crate versions, and so that its state (four `u64`) can go into a checkpoint.

/// xoshiro256++ seeded through SplitMix64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Rng { s }
    }

    /// The internal state, for checkpoints.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// Restores a state from [`Rng::state`]. An all-zero state (which would only
    /// ever produce zeros) is replaced by the state of seed 0.
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] {
            Rng::new(0)
        } else {
            Rng { s }
        }
    }

    /// The state as text, `a,b,c,d`, for string metadata (checkpoints).
    pub fn state_text(&self) -> String {
        Self::format_state(self.s)
    }

    /// A state (as from [`Rng::state`]) as `a,b,c,d` text.
    pub fn format_state(s: [u64; 4]) -> String {
        format!("{},{},{},{}", s[0], s[1], s[2], s[3])
    }

    /// A generator from [`Rng::state_text`]'s text.
    pub fn from_state_text(text: &str) -> crate::Result<Self> {
        Ok(Rng::from_state(Self::parse_state(text)?))
    }

    /// Parses `a,b,c,d` text into a state (the inverse of [`Rng::format_state`]).
    pub fn parse_state(text: &str) -> crate::Result<[u64; 4]> {
        let bad = || crate::Error::Argument {
            op: "rng state",
            msg: format!("'{text}' is not four integers"),
        };
        let parts: Vec<u64> = text
            .split(',')
            .map(|p| p.trim().parse::<u64>().map_err(|_| bad()))
            .collect::<crate::Result<_>>()?;
        parts.try_into().map_err(|_| bad())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal, by the Box–Muller transform.
    pub fn normal(&mut self) -> f64 {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in [0, n); `n` must be > 0 (returns 0 for n == 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the bias for n far below 2^64 is negligible.
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Shuffles a slice in place (Fisher–Yates).
    pub fn shuffle<X>(&mut self, items: &mut [X]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_roundtrip() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = Rng::from_state(a.state());
        let mut d = Rng::from_state_text(&a.state_text()).unwrap();
        let x = a.next_u64();
        assert_eq!(x, c.next_u64());
        assert_eq!(x, d.next_u64());
        assert!(Rng::from_state_text("1,2,3").is_err());
        assert!(Rng::from_state_text("1,2,x,4").is_err());
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = Rng::new(3);
        let xs: Vec<f64> = (0..100_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }
}
