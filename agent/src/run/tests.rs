//! The probe loop against simulated pods on real loopback sockets, on
//! paused tokio time: rounds on schedule with a pod that hangs, and pods
//! closing their kept connections between rounds (crashes, and routine
//! keep-alive timeouts).
//!
//! Paused time moves on only while every task waits, so each wait below
//! is for something the loop produces (a result, a batch), never a sleep.

// The simulator lives in the coordinator's `sim` module; it depends on
// tokio alone, so it is compiled in here rather than copied.
#[allow(dead_code)]
#[path = "../../../coordinator/src/sim.rs"]
mod pods;

use std::net::{Ipv4Addr, SocketAddr};

use knowton_proto::agent::v1::Failure;
use pods::{Behaviour, SimPod};
use tokio::task::JoinHandle;

use super::*;

const INTERVAL: Duration = Duration::from_secs(5);
const SLOW: Duration = Duration::from_secs(1);

/// A running probe loop and what it sends.
struct Loop {
    rounds: mpsc::Receiver<Round>,
    metrics: AgentMetrics,
    started: Instant,
    task: JoinHandle<()>,
    _targets: watch::Sender<Vec<Target>>,
    instructions: watch::Sender<Instructed>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A result as the stream got it, with when (since the loop started).
struct Got {
    at: Duration,
    result: PodResult,
}

impl Got {
    fn pending(&self) -> bool {
        self.result.api_health.as_ref().is_some_and(|o| o.pending)
    }

    fn api_ok(&self) -> bool {
        self.result.api_health.as_ref().is_some_and(|o| o.ok)
    }

    fn liveness_failure(&self) -> Failure {
        self.result
            .liveness
            .as_ref()
            .map_or(Failure::None, |o| o.failure())
    }
}

fn start(targets: Vec<Target>, timeout: Duration) -> Loop {
    start_with(targets, timeout, 8)
}

fn start_with(targets: Vec<Target>, timeout: Duration, concurrency: usize) -> Loop {
    let mut args = Args::for_tests(
        "node-a",
        SocketAddr::from(([127, 0, 0, 1], 1)),
        std::path::Path::new("/nonexistent"),
    );
    args.interval = INTERVAL;
    args.timeout = timeout;
    args.slow_threshold = SLOW;
    args.concurrency = concurrency;
    let (prober, idle_closed) = Prober::watching(ProbeSettings {
        timeout,
        slow_threshold: SLOW,
        confirm: true,
    });
    let (targets_tx, targets) = watch::channel(targets);
    let (instructions_tx, instructions) = watch::channel(Instructed::default());
    let (rounds_tx, rounds) = mpsc::channel(4);
    let metrics = AgentMetrics::new();
    let task = tokio::spawn({
        let metrics = metrics.clone();
        async move {
            probe_loop(
                &args,
                Arc::new(prober),
                idle_closed,
                targets,
                None,
                instructions,
                rounds_tx,
                metrics,
            )
            .await;
        }
    });
    Loop {
        rounds,
        metrics,
        started: Instant::now(),
        task,
        _targets: targets_tx,
        instructions: instructions_tx,
    }
}

impl Loop {
    /// Asks for a check-all, as the coordinator does.
    fn check_all(&self) {
        self.instructions.send_modify(|i| i.check_alls += 1);
    }

    /// Kept connections the pods closed (`how`: clean or reset).
    fn idle_closed(&self, how: &str) -> u64 {
        self.metrics.idle_closed.with_label_values(&[how]).get()
    }

    /// The next results of `pod`, up to `n`, as they reach the stream;
    /// panics if they take longer than `within` (tokio time).
    async fn results_of(&mut self, pod: &str, n: usize, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            let round = tokio::time::timeout_at(deadline, self.rounds.recv())
                .await
                .unwrap_or_else(|_| panic!("{n} results of {pod} within {within:?}"))
                .expect("the loop runs");
            let at = self.started.elapsed();
            got.extend(
                round
                    .results
                    .into_iter()
                    .filter(|r| r.pod == pod)
                    .map(|result| Got { at, result }),
            );
        }
        got
    }

    /// Every result that reaches the stream within `within`.
    async fn results_for(&mut self, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while let Ok(round) = tokio::time::timeout_at(deadline, self.rounds.recv()).await {
            let at = self.started.elapsed();
            let round = round.expect("the loop runs");
            got.extend(round.results.into_iter().map(|result| Got { at, result }));
        }
        got
    }
}

fn pod(host: u8) -> (SimPod, Target) {
    let pod = SimPod::start(Ipv4Addr::new(127, 0, 1, host), 0);
    let target = Target {
        tenant: format!("tenant-{host}"),
        pod: format!("web-{host}"),
        url: pod.url(),
        storage_path: None,
    };
    (pod, target)
}

/// A pod that takes longer than a round to answer is not probed again
/// while its probe runs: the rounds skip it (counted) and go on, on
/// schedule, for the other pod; its slow verdict leaves at the threshold.
#[tokio::test(start_paused = true)]
async fn a_hanging_pod_is_skipped_and_the_rounds_keep_their_schedule() {
    let (hanging, hanging_target) = pod(2);
    let (healthy, healthy_target) = pod(3);
    hanging.set(Behaviour::Slow(Duration::from_secs(12))).await;
    let mut probes = start(
        vec![hanging_target, healthy_target],
        Duration::from_secs(20),
    );

    // Rounds at about 0, 5 and 10 s (each pod in its group's turn);
    // the hanging pod answers 12 s after its first probe.
    let healthy_results = probes.results_of("web-3", 3, INTERVAL * 4).await;
    let gaps: Vec<Duration> = healthy_results
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .collect();
    for gap in &gaps {
        assert!(
            gap.abs_diff(INTERVAL) < Duration::from_millis(300),
            "rounds every {INTERVAL:?}: {gaps:?}"
        );
    }
    assert!(healthy_results.iter().all(|g| g.api_ok() && !g.pending()));
    assert_eq!(
        hanging.requests("/api/health"),
        2,
        "asked once (with its confirmation), not again while in flight"
    );
    assert_eq!(healthy.requests("/health"), 3);
    assert_eq!(probes.metrics.slow_verdicts.get(), 1, "at the threshold");

    // Its answer 12 s after its probe; the next round probes it again.
    let hanging_results = probes.results_of("web-2", 1, INTERVAL * 2).await;
    assert!(!hanging_results[0].pending() && hanging_results[0].api_ok());
    assert!(hanging_results[0].at >= Duration::from_secs(12));
    assert_eq!(
        probes.metrics.probes_skipped.get(),
        2,
        "the two rounds it spent in flight are skipped and counted"
    );
}

/// With room for one probe at a time, a pod slow to answer holds its place
/// only briefly ([`PACE`]): the next pod is probed and reported long before
/// the slow one's verdict, let alone its answer.
#[tokio::test(start_paused = true)]
async fn a_slow_pod_does_not_hold_its_place_among_the_concurrent_probes() {
    let (slow, slow_target) = pod(8);
    let (_fast, fast_target) = pod(9);
    slow.set(Behaviour::Slow(Duration::from_secs(3))).await;
    let mut probes = start_with(vec![slow_target, fast_target], Duration::from_secs(5), 1);
    // Both at once: a check-all round is not spread over the interval.
    probes.check_all();
    let got = probes.results_for(Duration::from_secs(4)).await;
    let order: Vec<(&str, bool, Duration)> = got
        .iter()
        .map(|g| (g.result.pod.as_str(), g.pending(), g.at))
        .collect();
    assert_eq!(
        order
            .iter()
            .map(|(pod, pending, _)| (*pod, *pending))
            .collect::<Vec<_>>(),
        [("web-9", false), ("web-8", true), ("web-8", false)],
        "{order:?}"
    );
    // The check-all round starts at once: the fast pod waits for its place
    // (PACE) and its batch (FLUSH_AFTER), no more.
    assert!(order[0].2 <= PACE + FLUSH_AFTER, "{order:?}");
}

/// A crashed pod resets its connections: the watched idle connection says
/// so, the pod is probed at once, the refused connections confirm the
/// crash and that result leaves at once, long before the next round.
#[tokio::test(start_paused = true)]
async fn a_crash_between_rounds_is_reported_at_once() {
    let (crashing, target) = pod(4);
    let mut probes = start(vec![target], Duration::from_secs(2));
    let first = probes.results_of("web-4", 1, INTERVAL * 2).await;
    assert!(first[0].api_ok());
    let rounds = probes.metrics.rounds.get();

    crashing.crash().await;
    let crashed_at = probes.started.elapsed();
    let got = probes.results_of("web-4", 1, Duration::from_secs(1)).await;
    assert!(
        got[0].at - crashed_at < Duration::from_millis(200),
        "reported {:?} after the crash",
        got[0].at - crashed_at
    );
    assert_eq!(got[0].liveness_failure(), Failure::Refused);
    let api = got[0].result.api_health.clone().unwrap();
    assert_eq!(api.failure(), Failure::Refused);
    assert!(api.confirmed, "{api:?}");
    assert_eq!(probes.metrics.rounds.get(), rounds, "not a round's result");
    assert_eq!(probes.idle_closed("reset"), 1);

    // Back up: the next round finds it healthy again.
    crashing.set(Behaviour::Healthy).await;
    let got = probes.results_of("web-4", 1, INTERVAL * 2).await;
    assert!(got[0].api_ok());
}

/// A process that exits closes its connections with a FIN, as a keep-alive
/// timeout does: the re-check finds the port refused and reports at once.
#[tokio::test(start_paused = true)]
async fn a_pod_that_closes_and_stops_listening_is_reported_at_once() {
    let (stopping, target) = pod(5);
    let mut probes = start(vec![target], Duration::from_secs(2));
    probes.results_of("web-5", 1, INTERVAL * 2).await;

    stopping.set(Behaviour::Refuse).await;
    let stopped_at = probes.started.elapsed();
    let got = probes.results_of("web-5", 1, Duration::from_secs(1)).await;
    assert!(got[0].at - stopped_at < Duration::from_millis(200));
    assert_eq!(got[0].liveness_failure(), Failure::Refused);
    assert_eq!(probes.idle_closed("clean"), 1);
}

/// A pod whose keep-alive timeout (2 s) is shorter than the interval closes
/// every kept connection between rounds: re-checked, found answering, it
/// raises nothing and sends nothing between rounds.
#[tokio::test(start_paused = true)]
async fn a_routine_idle_close_raises_nothing() {
    let (closing, target) = pod(6);
    closing.set_idle_timeout(Some(Duration::from_secs(2)));
    let mut probes = start(vec![target], Duration::from_secs(2));

    let got = probes.results_for(INTERVAL * 4).await;
    assert!(got.len() >= 3, "{} results", got.len());
    for g in &got {
        let r = &g.result;
        assert!(
            g.api_ok() && !g.pending() && r.liveness.as_ref().is_some_and(|o| o.ok),
            "{r:?}"
        );
    }
    // One result per round, none between (the last round started may not
    // have reached the pod's group yet).
    let rounds = usize::try_from(probes.metrics.rounds.get()).unwrap();
    assert!(
        got.len() == rounds || got.len() + 1 == rounds,
        "{} results in {rounds} rounds",
        got.len()
    );
    let at: Vec<Duration> = got.iter().map(|g| g.at).collect();
    for gap in at.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap.abs_diff(INTERVAL) < Duration::from_millis(300),
            "{at:?}"
        );
    }
    let clean = probes.idle_closed("clean");
    assert!(clean >= 2, "the pod closed idle connections: {clean}");
    assert!(
        closing.requests("/health") > u64::try_from(rounds).unwrap(),
        "re-checked between rounds"
    );
    assert_eq!(probes.idle_closed("reset"), 0);
}

/// A round's probes are spread over the interval, each pod in a group of
/// its own, so each pod is still probed once per interval; a check-all
/// probes every pod at once, then the rounds go on spread out.
#[tokio::test(start_paused = true)]
async fn a_rounds_probes_are_spread_over_the_interval_and_a_check_all_is_not() {
    let (_pods, targets): (Vec<SimPod>, Vec<Target>) = (20..32).map(pod).unzip();
    let mut probes = start(targets, Duration::from_secs(2));

    let got = probes.results_for(INTERVAL * 3).await;
    let mut by_pod: HashMap<String, Vec<Duration>> = HashMap::new();
    for g in &got {
        assert!(g.api_ok() && !g.pending(), "{:?}", g.result);
        by_pod.entry(g.result.pod.clone()).or_default().push(g.at);
    }
    assert_eq!(by_pod.len(), 12, "every pod probed: {by_pod:?}");
    for (pod, at) in &by_pod {
        assert!((2..=3).contains(&at.len()), "{pod}: {at:?}");
        for gap in at.windows(2).map(|w| w[1] - w[0]) {
            assert!(
                gap.abs_diff(INTERVAL) < Duration::from_millis(300),
                "{pod} probed every {INTERVAL:?}: {at:?}"
            );
        }
    }
    let firsts: Vec<Duration> = by_pod.values().map(|at| at[0]).collect();
    let span = *firsts.iter().max().unwrap() - *firsts.iter().min().unwrap();
    assert!(
        span > INTERVAL / 2,
        "the first round's results spread over {span:?} only: {firsts:?}"
    );
    let batches: HashSet<Duration> = firsts.iter().copied().collect();
    assert!(batches.len() >= 6, "{} batches: {firsts:?}", batches.len());

    probes.check_all();
    let asked = probes.started.elapsed();
    let got = probes.results_for(PACE * 3).await;
    let pods: HashSet<&str> = got.iter().map(|g| g.result.pod.as_str()).collect();
    assert_eq!(pods.len(), 12, "all at once: {pods:?}");
    assert!(got.iter().all(|g| g.at - asked < PACE * 2));

    // Then spread again: the next round's results come over its interval.
    let got = probes.results_for(INTERVAL * 2).await;
    let at: Vec<Duration> = got.iter().map(|g| g.at).collect();
    let span = *at.iter().max().unwrap() - *at.iter().min().unwrap();
    assert!(span > INTERVAL / 2, "{at:?}");
}
