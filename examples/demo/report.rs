//! What the demo records per request, and the tables and sentences it
//! prints from those records.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Something that happens to one instance during a setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Slowed(&'static str),
    Died(&'static str),
    Drained(&'static str),
    Joined(&'static str),
}

impl Event {
    fn instance(self) -> &'static str {
        match self {
            Event::Slowed(n) | Event::Died(n) | Event::Drained(n) | Event::Joined(n) => n,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Event::Slowed(_) => "slowed down",
            Event::Died(_) => "died",
            Event::Drained(_) => "drained",
            Event::Joined(_) => "joined",
        }
    }
}

/// One request as the caller saw it.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it was sent, from the start of the setup.
    pub sent_at: Duration,
    /// How long the caller waited for the whole response.
    pub latency: Duration,
    /// The instance that answered, or why none did.
    pub outcome: Result<String, String>,
}

/// Everything one setup produced.
pub struct SetupResult {
    pub name: &'static str,
    pub events: Vec<(Duration, Event)>,
    pub records: Vec<Record>,
    /// Instance name -> zone.
    pub zones: BTreeMap<String, String>,
    pub refresh: Duration,
}

impl SetupResult {
    fn event_time(&self, pick: impl Fn(Event) -> bool) -> Option<(Duration, Event)> {
        self.events.iter().copied().find(|(_, e)| pick(*e))
    }

    fn errors(&self) -> usize {
        self.records.iter().filter(|r| r.outcome.is_err()).count()
    }

    /// Share of the answered requests sent at or after `from` that `name`
    /// answered, in percent.
    fn share_after(&self, name: &str, from: Duration) -> f64 {
        let answered: Vec<&String> = self
            .records
            .iter()
            .filter(|r| r.sent_at >= from)
            .filter_map(|r| r.outcome.as_ref().ok())
            .collect();
        percent(
            answered.iter().filter(|n| n.as_str() == name).count(),
            answered.len(),
        )
    }

    /// Requests `name` answered that were sent at or after `from`.
    fn served_after(&self, name: &str, from: Duration) -> usize {
        self.records
            .iter()
            .filter(|r| r.sent_at >= from && r.outcome.as_deref() == Ok(name))
            .count()
    }

    fn slowed(&self) -> Option<(Duration, Event)> {
        self.event_time(|e| matches!(e, Event::Slowed(_)))
    }

    fn drained(&self) -> Option<(Duration, Event)> {
        self.event_time(|e| matches!(e, Event::Drained(_)))
    }

    fn joined(&self) -> Option<(Duration, Event)> {
        self.event_time(|e| matches!(e, Event::Joined(_)))
    }

    fn died(&self) -> Option<(Duration, Event)> {
        self.event_time(|e| matches!(e, Event::Died(_)))
    }

    fn p99_after(&self, from: Duration) -> Duration {
        let mut all: Vec<Duration> = self
            .records
            .iter()
            .filter(|r| r.sent_at >= from)
            .map(|r| r.latency)
            .collect();
        all.sort_unstable();
        quantile(&all, 0.99)
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Rewrites the progress line.
pub fn progress(
    index: usize,
    setups: &[&str],
    now: Duration,
    total: Duration,
    sent: u64,
    records: &Mutex<Vec<Record>>,
) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return;
    }
    let errors = records
        .lock()
        .map(|r| r.iter().filter(|r| r.outcome.is_err()).count())
        .unwrap_or(0);
    eprint!(
        "\r  [{}/{}] {:<44} {:>5.1} s of {:.0} s  {:>6} sent  {:>4} errors ",
        index + 1,
        setups.len(),
        setups[index],
        now.as_secs_f64(),
        total.as_secs_f64(),
        sent,
        errors
    );
    let _ = std::io::stderr().flush();
}

/// Clears the progress line.
pub fn clear_progress() {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return;
    }
    eprint!("\r{:120}\r", "");
    let _ = std::io::stderr().flush();
}

/// Prints one setup's table.
pub fn print_setup(index: usize, count: usize, result: &SetupResult) {
    println!("[{}/{}] {}", index + 1, count, result.name);
    let events: Vec<String> = result
        .events
        .iter()
        .map(|(t, e)| format!("{:.1} s {} {}", t.as_secs_f64(), e.instance(), e.verb()))
        .collect();
    println!("  events: {}", events.join(" · "));
    println!(
        "  {:<8} {:<5} {:>8} {:>7} {:>8} {:>8}   after its event",
        "instance", "zone", "requests", "share", "p50 ms", "p99 ms"
    );
    let answered = result.records.len() - result.errors();
    for (name, zone) in &result.zones {
        let mut latencies: Vec<Duration> = result
            .records
            .iter()
            .filter(|r| r.outcome.as_deref() == Ok(name.as_str()))
            .map(|r| r.latency)
            .collect();
        latencies.sort_unstable();
        let (p50, p99) = if latencies.is_empty() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{:.1}", ms(quantile(&latencies, 0.5))),
                format!("{:.1}", ms(quantile(&latencies, 0.99))),
            )
        };
        println!(
            "  {:<8} {:<5} {:>8} {:>6.1}% {:>8} {:>8}   {}",
            name,
            zone,
            latencies.len(),
            percent(latencies.len(), answered),
            p50,
            p99,
            after_event(result, name)
        );
    }
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &result.records {
        if let Err(e) = &r.outcome {
            *reasons.entry(e.as_str()).or_default() += 1;
        }
    }
    let reasons: Vec<String> = reasons
        .iter()
        .take(3)
        .map(|(why, n)| format!("{n}× {why}"))
        .collect();
    println!(
        "  errors: {} of {} ({:.2} %){}{}",
        result.errors(),
        result.records.len(),
        percent(result.errors(), result.records.len()),
        if reasons.is_empty() { "" } else { ": " },
        reasons.join("; ")
    );
    let mut all: Vec<Duration> = result.records.iter().map(|r| r.latency).collect();
    all.sort_unstable();
    println!(
        "  latency of every request (errors included): p50 {:.1} ms, p99 {:.1} ms\n",
        ms(quantile(&all, 0.5)),
        ms(quantile(&all, 0.99))
    );
}

fn after_event(result: &SetupResult, name: &str) -> String {
    let Some((at, event)) = result.event_time(|e| e.instance() == name) else {
        return String::new();
    };
    match event {
        Event::Slowed(_) => format!(
            "{:.1} % of requests after it slowed down",
            result.share_after(name, at)
        ),
        Event::Died(_) => {
            let errors = result
                .records
                .iter()
                .filter(|r| r.sent_at >= at && r.outcome.is_err())
                .count();
            format!("{errors} failed requests sent after it died")
        }
        Event::Drained(_) => format!(
            "{} requests sent more than 2 refreshes after it left the list",
            result.served_after(name, at + result.refresh * 2)
        ),
        Event::Joined(_) => format!(
            "{:.1} % of requests after it joined",
            result.share_after(name, at + result.refresh * 2)
        ),
    }
}

/// Prints the sentences that say what the numbers mean.
pub fn print_summary(results: &[SetupResult]) {
    println!("What the numbers say:");
    let lost: Vec<String> = results
        .iter()
        .map(|r| format!("{} lost {}", r.name, r.errors()))
        .collect();
    let losers: Vec<&str> = results
        .iter()
        .filter(|r| r.errors() > 0)
        .map(|r| r.name)
        .collect();
    println!("- Requests lost: {}.", lost.join("; "));
    if losers.is_empty() {
        println!("  No setup lost a request.");
    } else {
        println!(
            "  A dead instance costs requests until its circuit breaker opens, unless a retry \
             moves them to another instance ({} had no retries).",
            losers.join(", ")
        );
    }
    for r in results {
        if let (Some((slow_at, slow)), Some((died_at, _))) = (r.slowed(), r.died()) {
            let during: Vec<&String> = r
                .records
                .iter()
                .filter(|x| x.sent_at >= slow_at && x.sent_at < died_at)
                .filter_map(|x| x.outcome.as_ref().ok())
                .collect();
            let window_share = percent(
                during
                    .iter()
                    .filter(|n| n.as_str() == slow.instance())
                    .count(),
                during.len(),
            );
            // The fair share among the instances this setup picks from
            // (zone avoidance keeps the caller's zone: 3 of the 5).
            let mut picked: Vec<&str> = during.iter().map(|n| n.as_str()).collect();
            picked.push(slow.instance());
            picked.sort_unstable();
            picked.dedup();
            println!(
                "- {}: the slowed {} took {:.1} % of requests while 5 instances were listed \
                 (fair share {:.0} % among the {} it picked from); p99 after the slow-down \
                 {:.1} ms.",
                r.name,
                slow.instance(),
                window_share,
                100.0 / picked.len() as f64,
                picked.len(),
                ms(r.p99_after(slow_at))
            );
        }
    }
    let late: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let (at, e) = r.drained()?;
            Some((r.name, r.served_after(e.instance(), at + r.refresh * 2)))
        })
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name}: {n}"))
        .collect();
    if late.is_empty() {
        println!(
            "- The drained instance got no request sent later than two list refreshes after it \
             left the list, in any setup."
        );
    } else {
        println!(
            "- The drained instance still got requests after two refreshes: {}.",
            late.join(", ")
        );
    }
    let joined: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let (at, e) = r.joined()?;
            Some(format!(
                "{} {:.1} %",
                r.name,
                r.share_after(e.instance(), at + r.refresh * 2)
            ))
        })
        .collect();
    println!(
        "- The new instance's share once listed: {} (4 live instances listed then: fair share 25 %; \
         33 % among the 3 live in the caller's zone under zone avoidance).",
        joined.join("; ")
    );
    if let Some(zoned) = results.iter().find(|r| r.name.starts_with("zone")) {
        let answered: Vec<&String> = zoned
            .records
            .iter()
            .filter_map(|x| x.outcome.as_ref().ok())
            .collect();
        let local = answered
            .iter()
            .filter(|n| zoned.zones.get(n.as_str()).is_some_and(|z| z == "east"))
            .count();
        println!(
            "- Zone avoidance kept {:.1} % of answered requests in the caller's zone east; \
             the other setups spread over both zones.",
            percent(local, answered.len())
        );
    }
}
