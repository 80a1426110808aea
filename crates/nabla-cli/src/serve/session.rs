//! One playground run: a thread that owns a [`Trainer`] and answers the page's messages
//! between steps (start, pause, step, reset, save, inspect), and publishes a snapshot of the
//! run (metrics, decision regions, layer norms) at most every [`FRAME`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nabla::autograd::{scope, Inspection};
use nabla::nn::Module;
use nabla::train::{batch_loss, Callback, StepView, StopReason, Trainer};
use nabla::GradStore;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use super::request::Resolved;
use super::view;
use crate::model::{save_model, ModelMeta};

/// Time between two published snapshots while training runs (20 per second).
pub const FRAME: Duration = Duration::from_millis(50);

/// What the page asks of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Train until paused.
    Start,
    /// Stop after the current step.
    Pause,
    /// Run one step, then pause.
    Step,
    /// Rebuild the model at step 0, paused.
    Reset,
}

/// A reply channel.
type Reply<T> = oneshot::Sender<Result<T>>;

/// A message to a run's thread.
pub enum Msg {
    /// Start, pause, step or reset; replies with the new state.
    Control(Action, Reply<String>),
    /// The model as a nabla model file.
    Save(Reply<Vec<u8>>),
    /// Record the graph of the current batch; replies with its JSON.
    Inspect(Reply<Value>),
    /// Run the next op of the inspected batch's backward pass.
    InspectStep(Reply<Value>),
    /// The least time between two steps (`None`: as fast as the machine goes); replies with
    /// the state.
    Speed(Option<Duration>, Reply<String>),
}

/// Where the thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Running,
    Paused,
    StepOnce,
}

/// Why a trainer's life ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Reset,
    Quit,
}

/// The thread's side of a run.
struct Live {
    rx: Receiver<Msg>,
    snapshots: watch::Sender<Arc<String>>,
    resolved: Arc<Resolved>,
    mode: Mode,
    exit: Option<Exit>,
    stop: Arc<AtomicBool>,
    min_step_time: Option<Duration>,
    last_step: Instant,
    /// When the last snapshot was published, and what making it cost: the next one is due
    /// after the larger of [`FRAME`] and twice that cost, so big models keep training.
    last_frame: Option<Instant>,
    frame_cost: Duration,
    batch: Vec<usize>,
    inspection: Option<Inspection<f32>>,
    state: &'static str,
    error: Option<String>,
    bounds: Option<[f64; 4]>,
    save_path: std::path::PathBuf,
}

/// Starts a run's thread; returns the sender of its messages and the receiver of its
/// snapshots (JSON).
/// `save_path` is where the thread writes the model for a download (in the server's private
/// directory).
pub fn spawn(
    resolved: Resolved,
    min_step_time: Option<Duration>,
    save_path: std::path::PathBuf,
) -> Result<(Sender<Msg>, watch::Receiver<Arc<String>>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (snap_tx, snap_rx) = watch::channel(Arc::new(String::from("{}")));
    let batch = first_batch(&resolved);
    let bounds = view::data_bounds(&resolved)?;
    let mut live = Live {
        rx,
        snapshots: snap_tx,
        resolved: Arc::new(resolved),
        mode: Mode::Paused,
        exit: None,
        stop: Arc::new(AtomicBool::new(false)),
        min_step_time,
        last_step: Instant::now(),
        last_frame: None,
        frame_cost: Duration::ZERO,
        batch,
        inspection: None,
        state: "paused",
        error: None,
        bounds,
        save_path,
    };
    // A trainer stays on the thread that made it; the thread reports whether it could.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("nabla-playground".into())
        .spawn(move || match live.new_trainer() {
            Ok(trainer) => {
                // The first snapshot (step 0) exists before the page can ask for it.
                live.publish(trainer.model(), None, 0, trainer.epoch());
                let _ = ready_tx.send(Ok(()));
                live.run(trainer);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        })
        .context("cannot start a training thread")?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the training thread failed to start"))??;
    Ok((tx, snap_rx))
}

/// The rows of the first batch (what the inspector shows before any step).
fn first_batch(r: &Resolved) -> Vec<usize> {
    (0..r.config.batch_size.min(r.train.len())).collect()
}

impl Live {
    fn new_trainer(&mut self) -> Result<Trainer> {
        let r = &self.resolved;
        let trainer = Trainer::new(r.config.clone(), r.train.clone())?.with_test(r.test.clone());
        self.stop = trainer.stop_handle();
        Ok(trainer)
    }

    /// The thread: one trainer per reset, until the page goes away.
    fn run(mut self, mut trainer: Trainer) {
        loop {
            self.state = "paused";
            self.mode = Mode::Paused;
            self.inspection = None;
            self.publish(trainer.model(), None, trainer.step(), trainer.epoch());
            // Nothing trains until the page says start or step.
            self.serve_until_moving(trainer.model(), trainer.step(), trainer.epoch());
            if self.exit.is_none() {
                self.state = "running";
                let result = trainer.fit(&mut self);
                self.state = match &result {
                    Ok(StopReason::Interrupted) => "paused",
                    Ok(_) => "finished",
                    Err(e) => {
                        self.error = Some(format!("training stopped: {e}"));
                        "failed"
                    }
                };
                if self.exit.is_none() {
                    trainer.model_mut().set_training(false);
                    self.mode = Mode::Paused;
                    self.publish(trainer.model(), None, trainer.step(), trainer.epoch());
                    self.serve_until_moving(trainer.model(), trainer.step(), trainer.epoch());
                }
            }
            match self.exit.take() {
                Some(Exit::Reset) | None => {
                    self.error = None;
                    self.batch = first_batch(&self.resolved);
                    match self.new_trainer() {
                        Ok(t) => trainer = t,
                        Err(_) => return,
                    }
                }
                Some(Exit::Quit) => return,
            }
        }
    }

    /// Answers messages while no step can run (before the first step, after the run ended);
    /// returns on start/step (before the first step only), reset, or when the page is gone.
    fn serve_until_moving(&mut self, model: &dyn Module<f32>, step: u64, epoch: usize) {
        let fresh = step == 0;
        loop {
            let Ok(msg) = self.rx.recv() else {
                self.exit = Some(Exit::Quit);
                return;
            };
            self.handle(msg, model, None, (step, epoch));
            if self.exit.is_some() || (fresh && self.mode != Mode::Paused) {
                return;
            }
            // After the run ended, start and step have nothing left to do.
            self.mode = Mode::Paused;
        }
    }

    /// One message, with the model (and the last step's gradients) between two steps.
    fn handle(
        &mut self,
        msg: Msg,
        model: &dyn Module<f32>,
        grads: Option<&GradStore<f32>>,
        (step, epoch): (u64, usize),
    ) {
        match msg {
            Msg::Control(action, reply) => {
                let finished = matches!(self.state, "finished" | "failed");
                match action {
                    Action::Start if !finished => self.mode = Mode::Running,
                    Action::Step if !finished => self.mode = Mode::StepOnce,
                    Action::Pause => self.mode = Mode::Paused,
                    Action::Reset => {
                        self.exit = Some(Exit::Reset);
                        self.stop.store(true, Ordering::SeqCst);
                    }
                    Action::Start | Action::Step => {}
                }
                self.state = match (self.exit, self.mode) {
                    (Some(_), _) => "paused",
                    _ if finished => self.state,
                    (None, Mode::Paused) => "paused",
                    (None, _) => "running",
                };
                let _ = reply.send(Ok(self.state.to_string()));
                self.publish(model, grads, step, epoch);
            }
            Msg::Speed(t, reply) => {
                self.min_step_time = t;
                let _ = reply.send(Ok(self.state.to_string()));
            }
            Msg::Save(reply) => {
                let _ = reply.send(self.save(model));
            }
            Msg::Inspect(reply) => {
                let _ = reply.send(self.inspect(model));
            }
            Msg::InspectStep(reply) => {
                let _ = reply.send(self.inspect_step_once());
            }
        }
    }

    fn save(&self, model: &dyn Module<f32>) -> Result<Vec<u8>> {
        let r = &self.resolved;
        let meta = ModelMeta {
            spec: r
                .config
                .model
                .clone()
                .context("internal: the playground's config has a model spec")?,
            input_scale: r.data.input_scale,
            task: r.data.task,
            normalizer: r.normalizer.clone(),
            class_names: r.data.class_names.clone(),
            dataset: r.data.name.clone(),
            data: (r.data.kind != crate::args::DatasetName::Csv).then(|| r.args.data.clone()),
        };
        let path = &self.save_path;
        save_model(path, model, &meta)?;
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
        let _ = std::fs::remove_file(path);
        bytes
    }

    fn inspect(&mut self, model: &dyn Module<f32>) -> Result<Value> {
        let r = &self.resolved;
        let x = r.train.x().index_select(0, &self.batch)?;
        let out = model.forward(&x)?;
        let loss = scope("loss", || {
            batch_loss(
                r.config.loss,
                &out,
                &r.train,
                &self.batch,
                r.config.label_smoothing,
            )
        })?;
        let mut names = model.named_parameters();
        names.push(("input".into(), x.clone()));
        let inspection = Inspection::new(&loss, &names)?;
        let mut report = serde_json::to_value(inspection.report())?;
        report["batch"] = json!(self.batch.len());
        report["loss"] = json!(loss.item()?);
        self.inspection = Some(inspection);
        Ok(report)
    }

    fn inspect_step_once(&mut self) -> Result<Value> {
        let ins = self
            .inspection
            .as_mut()
            .ok_or_else(|| anyhow!("inspect a batch first (POST …/inspect)"))?;
        match ins.step()? {
            Some(step) => Ok(serde_json::to_value(step)?),
            None => Err(anyhow!(
                "the backward pass is complete ({} ops ran); inspect again for a new batch",
                ins.steps()
            )),
        }
    }

    /// Publishes a snapshot now.
    fn publish(
        &mut self,
        model: &dyn Module<f32>,
        grads: Option<&GradStore<f32>>,
        step: u64,
        epoch: usize,
    ) {
        let started = Instant::now();
        let r = &self.resolved;
        let snap = view::snapshot(r, model, grads, self.bounds, (step, epoch), self.state)
            .map(|mut v| {
                v["error"] = json!(self.error);
                v
            })
            .unwrap_or_else(|e| json!({"state": self.state, "step": step, "error": e.to_string()}));
        let _ = self.snapshots.send(Arc::new(snap.to_string()));
        self.last_frame = Some(Instant::now());
        self.frame_cost = started.elapsed();
    }

    /// Waits out the step-rate limit while answering messages; while paused, waits for one.
    fn next_message(&mut self) -> Option<Msg> {
        match self.mode {
            Mode::Paused => match self.rx.recv() {
                Ok(m) => Some(m),
                Err(_) => {
                    self.quit();
                    None
                }
            },
            _ => {
                let wait = self
                    .min_step_time
                    .map(|t| t.saturating_sub(self.last_step.elapsed()))
                    .unwrap_or_default();
                let got = if wait.is_zero() {
                    self.rx
                        .try_recv()
                        .map_err(|e| e == TryRecvError::Disconnected)
                } else {
                    self.rx
                        .recv_timeout(wait)
                        .map_err(|e| e == RecvTimeoutError::Disconnected)
                };
                match got {
                    Ok(m) => Some(m),
                    Err(true) => {
                        self.quit();
                        None
                    }
                    Err(false) => None,
                }
            }
        }
    }

    fn quit(&mut self) {
        self.exit = Some(Exit::Quit);
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Callback for Live {
    fn inspect_step(&mut self, view: &StepView<'_>) {
        // The parameters changed: an inspected graph's values are stale (backward would refuse
        // them), so it goes.
        self.inspection = None;
        self.batch.clear();
        self.batch.extend_from_slice(view.batch);
        let (step, epoch) = (view.progress.step, view.progress.epoch);
        if self.mode == Mode::StepOnce {
            self.mode = Mode::Paused;
            self.state = "paused";
        }
        let every = FRAME.max(self.frame_cost * 2);
        let due = self.last_frame.is_none_or(|t| t.elapsed() >= every);
        // What the update applied (after clipping), made only when something shows it (a copy
        // of every gradient while clipping applies); a failure shows no gradients.
        let applied = std::cell::OnceCell::new();
        let grads = || applied.get_or_init(|| view.applied_grads().ok()).as_ref();
        if self.mode == Mode::Paused || due {
            self.publish(view.model, grads(), step, epoch);
        }
        while self.exit.is_none() {
            let Some(msg) = self.next_message() else {
                break;
            };
            self.handle(msg, view.model, grads(), (step, epoch));
            if self.mode == Mode::StepOnce {
                break;
            }
        }
        self.last_step = Instant::now();
    }
}
