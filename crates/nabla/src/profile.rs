//! Where a computation's time goes, op by op: [`profile`] runs a closure and returns, with its
//! result, a [`Profile`] of the wall time of every forward op, every backward rule and every
//! gradient sum it ran on this thread, keyed by op name and input shapes, plus named spans
//! (the [`Trainer`](crate::train::Trainer)'s optimizer update, gradient checks, evaluation).
//!
//! How it measures, and what that means for reading it:
//! * A **forward** op's time runs from the end of whatever was measured before it (the
//!   previous op, rule or span) to the moment its result is made. Ops compute their values
//!   before they record, so this is the op's own work plus the caller's code since the
//!   previous op (a module's bookkeeping, a view's shape checks) — nothing is lost, and
//!   nothing is counted twice.
//! * A **backward** rule's time covers the whole rule (the ops it calls are not counted as
//!   forward ops); each **gradient sum** (two contributions to one tensor's gradient added)
//!   is its own row.
//! * Work split over the thread pool is wall time on the calling thread: a product that
//!   keeps both cores busy for 1 ms counts 1 ms.
//! * The rows add up to at most the profiled wall time; [`Profile::total`] is that wall time,
//!   and the difference (work after the last measured op) is reported as unattributed.
//!
//! When no profile is running, each op pays one thread-local flag read.
//!
//! ```
//! use nabla::{profile::profile, Tensor};
//! # fn main() -> nabla::Result<()> {
//! let w = Tensor::<f32>::randn(&[64, 32], 0.0, 0.1, 0)?.requires_grad();
//! let x = Tensor::<f32>::randn(&[16, 64], 0.0, 1.0, 1)?;
//! let (grads, prof) = profile(|| x.matmul(&w)?.relu()?.sum_all()?.backward());
//! assert!(grads?.get(&w).is_some());
//! let mm = prof.rows().iter().find(|r| r.op == "matmul" && r.phase == "forward").unwrap();
//! assert_eq!((mm.calls, mm.shapes.as_str()), (1, "[16, 64] [64, 32]"));
//! assert!(prof.rows().iter().any(|r| r.op == "matmul" && r.phase == "backward"));
//! println!("{prof}");
//! # Ok(()) }
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

type Key = (&'static str, &'static str, String);

struct State {
    /// The end of the last measured thing: the next forward op's time starts here.
    mark: Instant,
    /// Inside a backward rule or a span: ops are part of it, not rows of their own.
    depth: usize,
    rows: HashMap<Key, (u64, Duration)>,
}

/// One row of a [`Profile`]: an op (or span) in one phase with one set of input shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    /// `"forward"`, `"backward"`, `"gradient sum"` or `"span"`.
    pub phase: &'static str,
    /// The op's name ([`OpKind::name`](crate::autograd::OpKind::name)) or the span's.
    pub op: &'static str,
    /// The inputs' shapes, space-separated (`""` for spans and for rows merged by
    /// [`Profile::by_op`]).
    pub shapes: String,
    /// How many times it ran.
    pub calls: u64,
    /// Its wall time, all calls together.
    pub time: Duration,
}

/// The measured time of a [`profile`]d closure: rows sorted by time, largest first.
#[derive(Clone, Debug)]
pub struct Profile {
    rows: Vec<ProfileRow>,
    total: Duration,
}

/// Runs `f` and measures where its time goes on this thread (see the [module](self) docs).
/// A profile inside another one measures its own closure; the outer one counts the same ops
/// (or, where the inner profile runs inside one of the outer's spans or backward rules, that
/// row's time covers them).
pub fn profile<R>(f: impl FnOnce() -> R) -> (R, Profile) {
    let start = Instant::now();
    let state = State {
        mark: start,
        depth: 0,
        rows: HashMap::new(),
    };
    // Restores the outer profile, adding this one's rows to it, even if `f` panics.
    struct Restore {
        outer: Option<State>,
        was_active: bool,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(self.was_active));
            let inner = STATE.with(|s| std::mem::replace(&mut *s.borrow_mut(), self.outer.take()));
            STATE.with(|s| {
                // Inside a span or rule of the outer profile, that row already covers this
                // time: the inner rows are not added again.
                let mut outer = s.borrow_mut();
                if let (Some(o), Some(i)) = (outer.as_mut().filter(|o| o.depth == 0), inner) {
                    for (k, (n, t)) in i.rows {
                        let e = o.rows.entry(k).or_default();
                        e.0 += n;
                        e.1 += t;
                    }
                    o.mark = i.mark;
                }
            });
        }
    }
    let _restore = Restore {
        outer: STATE.with(|s| s.borrow_mut().replace(state)),
        was_active: ACTIVE.with(|a| a.replace(true)),
    };
    let r = f();
    let total = start.elapsed();
    let rows = STATE.with(|s| {
        s.borrow().as_ref().map_or_else(Vec::new, |st| {
            st.rows
                .iter()
                .map(|((phase, op, shapes), &(calls, time))| ProfileRow {
                    phase,
                    op,
                    shapes: shapes.clone(),
                    calls,
                    time,
                })
                .collect()
        })
    });
    (r, Profile::new(rows, total))
}

/// Whether a profile is running on this thread.
#[inline]
pub(crate) fn is_active() -> bool {
    ACTIVE.with(|a| a.get())
}

fn with_state(f: impl FnOnce(&mut State)) {
    STATE.with(|s| {
        if let Some(st) = s.borrow_mut().as_mut() {
            f(st)
        }
    })
}

/// The inputs' shapes, space-separated: a row's key.
pub(crate) fn shapes_of<T: Float>(inputs: &[&Tensor<T>]) -> String {
    let v: Vec<String> = inputs.iter().map(|t| fmt_shape(t.shape())).collect();
    v.join(" ")
}

/// A forward op has made its result: its time runs from the last mark to now.
pub(crate) fn forward_op<T: Float>(name: &'static str, inputs: &[&Tensor<T>]) {
    with_state(|st| {
        if st.depth > 0 {
            return;
        }
        let now = Instant::now();
        let e = st
            .rows
            .entry(("forward", name, shapes_of(inputs)))
            .or_default();
        e.0 += 1;
        e.1 += now - st.mark;
        st.mark = now;
    })
}

/// Runs `f` as one row (`phase`, `name`, `shapes`): ops inside it are not rows of their own.
/// Outside a profile it only runs `f`. If `f` panics (and the panic is caught inside the
/// profile), the row is still closed.
pub(crate) fn measure<R>(
    phase: &'static str,
    name: &'static str,
    shapes: impl FnOnce() -> String,
    f: impl FnOnce() -> R,
) -> R {
    if !is_active() {
        return f();
    }
    // Closes the row when dropped: the depth goes back down, and the outermost row is added.
    struct Row<S: FnOnce() -> String> {
        key: Option<(&'static str, &'static str, S)>,
        start: Instant,
    }
    impl<S: FnOnce() -> String> Drop for Row<S> {
        fn drop(&mut self) {
            let now = Instant::now();
            let key = self.key.take();
            with_state(|st| {
                st.depth = st.depth.saturating_sub(1);
                if let (0, Some((phase, name, shapes))) = (st.depth, key) {
                    let e = st.rows.entry((phase, name, shapes())).or_default();
                    e.0 += 1;
                    e.1 += now - self.start;
                    st.mark = now;
                }
            });
        }
    }
    with_state(|st| st.depth += 1);
    let _row = Row {
        key: Some((phase, name, shapes)),
        start: Instant::now(),
    };
    f()
}

/// Runs `f` as one named row of phase `"span"` in the running profile (the Trainer's
/// optimizer update, evaluation): the ops inside it are counted in the span, not as rows.
/// Outside a profile it only runs `f`.
///
/// ```
/// use nabla::{profile::{profile, span}, Tensor};
/// let x = Tensor::<f32>::ones(&[8]).unwrap();
/// let (_, prof) = profile(|| span("setup", || x.mul_scalar(2.0)));
/// assert_eq!(prof.rows()[0].op, "setup");
/// assert_eq!(prof.rows().len(), 1);
/// ```
pub fn span<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    measure("span", name, String::new, f)
}

impl Profile {
    fn new(mut rows: Vec<ProfileRow>, total: Duration) -> Self {
        rows.sort_by(|a, b| {
            b.time
                .cmp(&a.time)
                .then_with(|| (a.phase, a.op, &a.shapes).cmp(&(b.phase, b.op, &b.shapes)))
        });
        Profile { rows, total }
    }

    /// The rows, largest time first.
    pub fn rows(&self) -> &[ProfileRow] {
        &self.rows
    }

    /// The profiled closure's wall time.
    pub fn total(&self) -> Duration {
        self.total
    }

    /// The wall time no row accounts for (work after the last measured op).
    pub fn unattributed(&self) -> Duration {
        let sum: Duration = self.rows.iter().map(|r| r.time).sum();
        self.total.saturating_sub(sum)
    }

    /// The same profile with the rows of each (phase, op) merged over their shapes.
    pub fn by_op(&self) -> Profile {
        let mut merged: HashMap<(&'static str, &'static str), (u64, Duration)> = HashMap::new();
        for r in &self.rows {
            let e = merged.entry((r.phase, r.op)).or_default();
            e.0 += r.calls;
            e.1 += r.time;
        }
        let rows = merged
            .into_iter()
            .map(|((phase, op), (calls, time))| ProfileRow {
                phase,
                op,
                shapes: String::new(),
                calls,
                time,
            })
            .collect();
        Profile::new(rows, self.total)
    }

    /// The rows as CSV (`phase,op,shapes,calls,seconds,percent`), largest first.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("phase,op,shapes,calls,seconds,percent\n");
        for r in &self.rows {
            s.push_str(&format!(
                "{},{},\"{}\",{},{:.6},{:.2}\n",
                r.phase,
                r.op,
                r.shapes,
                r.calls,
                r.time.as_secs_f64(),
                self.percent(r.time)
            ));
        }
        s
    }

    fn percent(&self, t: Duration) -> f64 {
        100.0 * t.as_secs_f64() / self.total.as_secs_f64().max(1e-12)
    }
}

/// A table: phase, op, shapes, calls, milliseconds, share of the total, microseconds per call;
/// then the unattributed time and the total.
impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<13} {:<28} {:>9} {:>11} {:>6} {:>10}  shapes",
            "phase", "op", "calls", "ms", "%", "µs/call"
        )?;
        for r in &self.rows {
            let ms = r.time.as_secs_f64() * 1e3;
            writeln!(
                f,
                "{:<13} {:<28} {:>9} {:>11.1} {:>6.1} {:>10.1}  {}",
                r.phase,
                r.op,
                r.calls,
                ms,
                self.percent(r.time),
                1e3 * ms / r.calls.max(1) as f64,
                r.shapes
            )?;
        }
        let un = self.unattributed();
        writeln!(
            f,
            "{:<13} {:<28} {:>9} {:>11.1} {:>6.1}",
            "",
            "(unattributed)",
            "",
            un.as_secs_f64() * 1e3,
            self.percent(un)
        )?;
        write!(
            f,
            "{:<13} {:<28} {:>9} {:>11.1} {:>6.1}",
            "",
            "total",
            "",
            self.total.as_secs_f64() * 1e3,
            100.0
        )
    }
}
