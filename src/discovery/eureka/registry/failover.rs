//! Full answers given in failover that lack apps the copy holds.
//!
//! A Eureka peer restarted on its own refills as instances renew (up to
//! one renewal interval, 30 s by default): meanwhile it lists some apps and
//! not others. When the server the copy followed fails and the fetch fails
//! over to such a peer, an app the copy holds and the peer lacks may be
//! alive at the server that failed. The Java `DiscoveryClient` takes a
//! full answer as the truth whoever gave it
//! ([eureka#1490](https://github.com/Netflix/eureka/issues/1490)): with
//! service URLs `[A, B]`, `A` down and `B` restarted, every request to such
//! an app failed with "not in the registry" (10 of 10, the instance alive)
//! until it renewed at `B`, up to 30 s.
//!
//! So the registry tells failover answers apart:
//!
//! - A *failover* starts with an answer (full or delta) given after the
//!   server the copy followed (its *home*, the server of its last answer)
//!   failed in the same fetch, or answered an empty registry there (a home
//!   restarted between two fetches, which lost its registry: its emptiness
//!   says nothing of the apps the copy holds; before, the partly refilled
//!   peer answering next was the truth and dropped a live app, attack 64a
//!   finding 3). Only the registry's own fetches count: a
//!   [`VipSource`](super::VipSource) starts at a server of its own, so its
//!   failover neither starts nor ends the registry's (before, its failover
//!   made the partial peer the truth: ORDERS 0 instances against 1, attack
//!   64a finding 1). A failover lasts while answers come from other
//!   servers (the client keeps asking the one that answered, as Java's
//!   does), and ends when home gives a fetch's answer again, when an answer
//!   is taken as every server's (every server listing nothing), or
//!   [`absence_hold`](super::EurekaRegistryBuilder::absence_hold) after it
//!   started: a restarted peer refills within one renewal interval (30 s),
//!   so past the hold the answering server's full answers are the truth
//!   again and home, if it stays down or hung, is never asked again. A
//!   failover from the failover server to another one makes the failed one
//!   home, and keeps the episode's clock and the holds' clocks.
//! - Outside a failover a full answer is the truth, as in Java's client:
//!   an app removed at a server that answers first leaves the copy at once,
//!   whatever the other servers do, and no other server is asked.
//! - A full failover answer lacking apps the copy holds costs one more
//!   `GET /apps`, at home only, within one request timeout (so at most one
//!   more request timeout per fetch, inside the fetch that `refresh_now`
//!   callers share). If home answers (a body listing something), each
//!   lacking app takes home's records (an instance drained or replaced
//!   there is served as home lists it), or leaves the copy if home lacks it
//!   too. That confirmation settles only the apps the answer lacked: it
//!   neither ends the failover nor moves fetches to home (a restarted,
//!   partly refilled home would otherwise become the truth and drop live
//!   apps the answering server lists). A home that listed nothing when
//!   the failover started (restarted empty) proves no absence while it
//!   refills: an app it lacks stays held (before, its first partly
//!   refilled answer dropped a live app within seconds; attack 65b). If
//!   home does not answer, each
//!   lacking app keeps the copy's records (or home's last ones) for
//!   `absence_hold` (default 90 s, Eureka's lease duration) from the first
//!   answer of this failover that lacked it, then leaves the copy.
//! - A hold ends early when a full answer lists the app again, when the
//!   failover ends, or when the held app would take the copy past one of
//!   its bounds (records, metadata entries, text): then the answer is
//!   taken as it is. A delta naming the app does not end it (Eureka keeps a
//!   change in its delta queue for 3 minutes: a `DELETED` of another
//!   instance would restart the clock at each full fetch). Hold clocks
//!   exist only for apps the copy holds and an answer of this failover
//!   lacks, so they never carry over to the next failover.
//! - An app still held when a failover ends by age has had its hold (it is
//!   *spent*): no later failover holds it, nor asks home about it, until an
//!   answer lists it (a full answer, or a delta entry `ADDED` or
//!   `MODIFIED`). Peers failing in turn (a rolling restart's next step, or
//!   flapping) end one failover by age in the fetch that starts the next;
//!   before, the app, still in the copy, was held again from scratch: a
//!   gone app was served 1.64 s after the first answer lacking it with a
//!   hold of 800 ms, 2.94 s with 600 ms under flapping (attack 64a,
//!   finding 2). Spent marks are forgotten at every full answer for the
//!   apps it lists or the copy no longer holds, and when home answers
//!   again. So an
//!   app stays at most `absence_hold` after the first answer that lacked
//!   it, and never past the failover's own `absence_hold`.
//! - At most [`MAX_HELD_APPS`] apps are held at once; past it, the apps
//!   held longest (then by name) leave the copy first, as the answer says.
//!   An app that left the copy is not held again until an answer lists it,
//!   so no hold starts over.
//!
//! A copy holding apps an answer lacked is not that server's: it is not
//! marked complete, and the next delta's hash check asks for a full fetch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::copy::{Record, Registry, app_key};
use crate::discovery::eureka::client::Answered;
use crate::discovery::eureka::wire::{ActionType, Applications};

/// Most apps held at once (see the module docs). 4 096 keys and clocks:
/// under 200 KiB with 32-byte names; the records held are the copy's own,
/// bounded by its `max_instances`.
pub(super) const MAX_HELD_APPS: usize = 4_096;

/// An app's records, by instance id, under its key.
pub(super) type Kept = Vec<(String, BTreeMap<String, Record>)>;

/// Where the copy's answers come from, and the apps held.
#[derive(Debug, Default)]
pub(super) struct Failover {
    /// The server whose answer the copy took last.
    last: Option<usize>,
    /// The server the copy followed before the failover; `None` outside
    /// one.
    home: Option<usize>,
    /// When the failover started; `None` outside one.
    since: Option<Instant>,
    /// Held apps' keys, with the time the first answer lacked each.
    held: HashMap<String, Instant>,
    /// Apps still held when a failover ended by age: not held again until
    /// an answer lists them (see the module docs).
    spent: HashSet<String>,
    /// Home listed nothing when the failover started: an app its later,
    /// refilling answers lack stays held.
    home_refilling: bool,
}

/// What home said when asked to confirm (see the module docs).
pub(super) enum Confirmed {
    /// Home answered, listing something: its apps.
    Answered(Applications),
    /// Home did not answer, or listed nothing.
    Unanswered,
}

impl Failover {
    /// Notes the server that gave an answer (`None`: an answer taken as
    /// every server's) at `now`; returns home while the answer is a
    /// failover one. A failover that started `hold` or longer before `now`
    /// ends first (see the module docs).
    pub(super) fn answered(&mut self, answered: Option<Answered>, now: Instant, hold: Duration) -> Option<usize> {
        let Some(answered) = answered else {
            self.settle();
            return None;
        };
        if self.since.is_some_and(|since| now.saturating_duration_since(since) >= hold) {
            tracing::info!(?hold, "Eureka failover older than the absence hold; the answering server's full answers are the truth again");
            let held = std::mem::take(&mut self.held);
            self.spent.extend(held.into_keys());
            self.end();
        }
        match self.last {
            Some(last) if answered.after_failure && last != answered.server => {
                self.home = Some(last);
                self.home_refilling = answered.after_empty;
                // A failover from the failover server keeps the episode's
                // clock.
                self.since.get_or_insert(now);
            }
            _ if self.home == Some(answered.server) => self.settle(),
            _ => {}
        }
        self.last = Some(answered.server);
        self.home
    }

    fn end(&mut self) {
        self.home = None;
        self.home_refilling = false;
        self.since = None;
        self.held = HashMap::new();
    }

    /// Ends the failover on an answer from home or taken as every
    /// server's, and forgets spent marks: the copy follows that server
    /// again, whose answers list an app (the copy matches them) or drop it
    /// (its next full answer is the truth).
    fn settle(&mut self) {
        self.end();
        self.spent = HashSet::new();
    }

    /// Whether a full failover answer lacking the apps `missing` (keys)
    /// lacks one whose hold is not spent: only then is home asked.
    pub(super) fn holds_any(&self, missing: &HashSet<String>) -> bool {
        missing.iter().any(|key| !self.spent.contains(key))
    }

    /// A delta answer: the apps it lists (a record `ADDED` or `MODIFIED`,
    /// usable or not, as the copy takes them) are no longer spent.
    pub(super) fn listed_by(&mut self, delta: &Applications) {
        if self.spent.is_empty() {
            return;
        }
        for app in &delta.applications {
            let lists = super::copy::records_of(app)
                .any(|(_, action, ..)| matches!(action, ActionType::Added | ActionType::Modified));
            if lists {
                self.spent.remove(&app_key(&app.name));
            }
        }
    }

    /// What to put back into the copy after a full answer that lacked the
    /// apps `missing` (keys; empty outside a failover): with home's answer,
    /// its records of those it lists (clocks running; the others leave,
    /// or stay held while home refills); without, the records `registry`
    /// holds of each app whose hold, started at `now` or before, has not
    /// lasted `hold`, at most [`MAX_HELD_APPS`]. Spent apps are not held.
    pub(super) fn kept(
        &mut self,
        registry: &Registry,
        missing: &HashSet<String>,
        confirmed: Confirmed,
        now: Instant,
        hold: Duration,
    ) -> Kept {
        self.spent.retain(|key| missing.contains(key));
        let unspent: HashSet<String>;
        let missing = if self.spent.is_empty() {
            missing
        } else {
            unspent = missing.difference(&self.spent).cloned().collect();
            &unspent
        };
        self.held.retain(|key, _| missing.contains(key));
        let mut home = match confirmed {
            Confirmed::Answered(home) => home,
            Confirmed::Unanswered => return self.hold(registry, missing, now, hold),
        };
        home.applications.retain(|app| missing.contains(&app_key(&app.name)));
        let mut listed = Registry::new();
        super::copy::apply(&mut listed, &home, true);
        listed.retain(|_, records| !records.is_empty());
        if self.home_refilling {
            let lacking = missing.iter().filter(|key| !listed.contains_key(*key));
            let kept = self.hold(registry, &lacking.cloned().collect(), now, hold);
            return kept.into_iter().chain(listed).collect();
        }
        // An app home lists keeps its clock: if home stops answering, its
        // hold still ends `hold` after the first answer that lacked it.
        self.held.retain(|key, _| listed.contains_key(key));
        for key in listed.keys() {
            if self.held.len() >= MAX_HELD_APPS {
                break;
            }
            self.held.entry(key.clone()).or_insert(now);
        }
        listed.into_iter().collect()
    }

    /// The records `registry` holds of each app of `missing` whose hold
    /// has not lasted `hold` (see [`kept`](Self::kept)).
    fn hold(
        &mut self,
        registry: &Registry,
        missing: &HashSet<String>,
        now: Instant,
        hold: Duration,
    ) -> Kept {
        let mut kept: Vec<(Instant, String)> = Vec::new();
        for key in missing {
            let since = *self.held.entry(key.clone()).or_insert(now);
            if now.saturating_duration_since(since) < hold {
                kept.push((since, key.clone()));
            } else {
                self.held.remove(key);
            }
        }
        // Past the cap the apps held longest go first.
        kept.sort_unstable();
        let over = kept.len().saturating_sub(MAX_HELD_APPS);
        for (_, key) in kept.drain(..over) {
            self.held.remove(&key);
        }
        if over > 0 {
            tracing::warn!(over, "more apps absent from a failover Eureka answer than can be held; the apps held longest leave the copy");
        }
        kept.into_iter()
            .filter_map(|(_, key)| {
                let records = registry.get(&key)?.clone();
                Some((key, records))
            })
            .collect()
    }

    /// The apps held now.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// The apps whose hold is spent now.
    #[cfg(test)]
    pub(super) fn spent(&self) -> usize {
        self.spent.len()
    }
}

/// The keys of the apps `registry` holds records of and `apps` lists
/// nothing of.
pub(super) fn missing(registry: &Registry, apps: &Applications) -> HashSet<String> {
    let listed: HashSet<String> = apps
        .applications
        .iter()
        .filter(|app| !app.lists_nothing())
        .map(|app| app_key(&app.name))
        .collect();
    registry
        .iter()
        .filter(|(key, records)| !records.is_empty() && !listed.contains(*key))
        .map(|(key, _)| key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(server: usize, after_failure: bool) -> Option<Answered> {
        let after_empty = false;
        Some(Answered { server, after_failure, after_empty })
    }

    const HOLD: Duration = Duration::from_secs(90);

    #[test]
    fn a_failover_lasts_until_home_answers_again() {
        let t = Instant::now();
        let mut f = Failover::default();
        // A first answer after a failure has no copy to protect.
        assert_eq!(f.answered(at(1, true), t, HOLD), None);
        assert_eq!(f.answered(at(0, true), t, HOLD), Some(1));
        // The client keeps asking 0 first: still a failover.
        assert_eq!(f.answered(at(0, false), t, HOLD), Some(1));
        // 0 fails in turn, 1 answers: a new failover, home 0.
        assert_eq!(f.answered(at(1, true), t, HOLD), Some(0));
        // Home answers without a failure before it: over.
        assert_eq!(f.answered(at(0, false), t, HOLD), None);
        assert_eq!(f.answered(at(0, false), t, HOLD), None);
        // An answer taken as every server's ends one too.
        assert_eq!(f.answered(at(1, true), t, HOLD), Some(0));
        assert_eq!(f.answered(None, t, HOLD), None);
        assert_eq!(f.answered(at(1, false), t, HOLD), None);
    }

    /// Attack 63a, finding 2: with home unreachable for good the failover
    /// never ended, so a removal hours later was held.
    #[test]
    fn a_failover_ends_the_hold_after_it_started() {
        let t0 = Instant::now();
        let mut f = Failover::default();
        assert_eq!(f.answered(at(0, false), t0, HOLD), None);
        assert_eq!(f.answered(at(1, true), t0, HOLD), Some(0));
        let just_before = t0 + HOLD - Duration::from_millis(1);
        assert_eq!(f.answered(at(1, false), just_before, HOLD), Some(0));
        // 1 fails, 2 answers: home 1, same episode, same clock.
        assert_eq!(f.answered(at(2, true), just_before, HOLD), Some(1));
        assert_eq!(f.answered(at(2, false), t0 + HOLD, HOLD), None);
        assert_eq!(f.answered(at(2, false), t0 + 10 * HOLD, HOLD), None);
        // A later failure starts a new episode with its own clock.
        let t1 = t0 + 20 * HOLD;
        assert_eq!(f.answered(at(0, true), t1, HOLD), Some(2));
        assert_eq!(f.answered(at(0, false), t1 + HOLD / 2, HOLD), Some(2));
        assert_eq!(f.answered(at(0, false), t1 + HOLD, HOLD), None);
    }

    fn app(name: &str, port: u16) -> crate::discovery::eureka::wire::Application {
        let json = format!(
            r#"{{"applications":{{"application":[{{"name":"{name}","instance":[{{"instanceId":"{name}-1","hostName":"h","app":"{name}","status":"UP","port":{{"$":{port},"@enabled":"true"}}}}]}}]}}}}"#
        );
        let apps = crate::discovery::eureka::wire::decode_applications(json.as_bytes(), Default::default(), None);
        apps.unwrap().applications.remove(0)
    }

    fn apps_of(applications: Vec<crate::discovery::eureka::wire::Application>) -> Applications {
        Applications {
            apps_hashcode: None,
            versions_delta: None,
            applications,
        }
    }

    fn registry_of(apps: Vec<crate::discovery::eureka::wire::Application>) -> Registry {
        let mut registry = Registry::new();
        let apps = apps_of(apps);
        super::super::copy::apply(&mut registry, &apps, true);
        registry
    }

    fn ports(kept: &Kept) -> Vec<(String, Option<u16>)> {
        let mut out: Vec<_> = (kept.iter())
            .flat_map(|(k, r)| r.values().map(move |r| (k.clone(), r.instance.as_ref().map(|i| i.port()))))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn holds_last_the_hold_and_home_gives_its_own_records() {
        let copy = registry_of(vec![app("A", 1), app("B", 2)]);
        let missing: HashSet<String> = ["A".to_owned(), "B".to_owned()].into();
        let hold = Duration::from_secs(90);
        let t0 = Instant::now();
        let mut f = Failover::default();
        let kept = f.kept(&copy, &missing, Confirmed::Unanswered, t0, hold);
        assert_eq!(ports(&kept), [("A".into(), Some(1)), ("B".into(), Some(2))]);
        // B is listed again; A's clock keeps running from t0.
        let only_a: HashSet<String> = ["A".to_owned()].into();
        let later = t0 + Duration::from_secs(89);
        let kept = f.kept(&copy, &only_a, Confirmed::Unanswered, later, hold);
        assert_eq!(ports(&kept), [("A".into(), Some(1))]);
        assert_eq!(f.held(), 1);
        let kept = f.kept(&copy, &only_a, Confirmed::Unanswered, t0 + hold, hold);
        assert!(kept.is_empty());
        assert_eq!(f.held(), 0);
        // Home lists A on another port, and not B.
        let home = apps_of(vec![app("A", 7)]);
        let kept = f.kept(&copy, &missing, Confirmed::Answered(home), t0, hold);
        assert_eq!(ports(&kept), [("A".into(), Some(7))]);
        assert_eq!(f.held(), 1);
    }

    /// Attack 63a, findings 1 and 3: a hold's clock starts at the first
    /// answer that lacked the app and never restarts in the failover, home
    /// confirming it in between or not.
    #[test]
    fn a_hold_keeps_its_clock_through_home_answering() {
        let copy = registry_of(vec![app("A", 1)]);
        let missing: HashSet<String> = ["A".to_owned()].into();
        let hold = Duration::from_secs(90);
        let t0 = Instant::now();
        let mut f = Failover::default();
        let kept = f.kept(&copy, &missing, Confirmed::Unanswered, t0, hold);
        assert_eq!(ports(&kept), [("A".into(), Some(1))]);
        let home = apps_of(vec![app("A", 7)]);
        let t1 = t0 + Duration::from_secs(60);
        let kept = f.kept(&copy, &missing, Confirmed::Answered(home), t1, hold);
        assert_eq!(ports(&kept), [("A".into(), Some(7))]);
        // Home unreachable again: A's hold still ends at t0 + hold.
        let before = t0 + hold - Duration::from_millis(1);
        assert_eq!(f.kept(&copy, &missing, Confirmed::Unanswered, before, hold).len(), 1);
        assert!(f.kept(&copy, &missing, Confirmed::Unanswered, t0 + hold, hold).is_empty());
        assert_eq!(f.held(), 0);
    }

    /// Attack 64a, finding 2: a failover ending by age in the answer that
    /// starts the next (peers failing in turn) does not hold again an app
    /// it held; an answer listing the app ends that.
    #[test]
    fn a_hold_spent_by_age_does_not_start_over() {
        let copy = registry_of(vec![app("A", 1), app("B", 2)]);
        let only_a: HashSet<String> = ["A".to_owned()].into();
        let t0 = Instant::now();
        let mut f = Failover::default();
        assert_eq!(f.answered(at(0, false), t0, HOLD), None);
        assert_eq!(f.answered(at(1, true), t0, HOLD), Some(0));
        assert_eq!(ports(&f.kept(&copy, &only_a, Confirmed::Unanswered, t0, HOLD)), [("A".into(), Some(1))]);
        // One hold later 1 fails and 0 answers: the first failover ends
        // by age, a second starts in the same answer.
        let t1 = t0 + HOLD;
        assert_eq!(f.answered(at(0, true), t1, HOLD), Some(1));
        assert_eq!((f.held(), f.spent()), (0, 1));
        assert!(!f.holds_any(&only_a), "home is not asked about A");
        assert!(f.kept(&copy, &only_a, Confirmed::Unanswered, t1, HOLD).is_empty());
        // Home's answer listing A does not bring it back either.
        let home = apps_of(vec![app("A", 7)]);
        assert!(f.kept(&copy, &only_a, Confirmed::Answered(home), t1, HOLD).is_empty());
        // A full answer listing A forgets the mark: a later absence holds.
        assert!(f.kept(&copy, &HashSet::new(), Confirmed::Unanswered, t1, HOLD).is_empty());
        assert_eq!(f.spent(), 0);
        assert!(f.holds_any(&only_a));
        assert_eq!(f.kept(&copy, &only_a, Confirmed::Unanswered, t1, HOLD).len(), 1);
    }

    /// A delta listing a spent app (`ADDED` or `MODIFIED`) forgets its
    /// mark; a `DELETED` of one of its instances does not.
    #[test]
    fn a_delta_listing_a_spent_app_forgets_its_mark() {
        let copy = registry_of(vec![app("A", 1)]);
        let only_a: HashSet<String> = ["A".to_owned()].into();
        let t0 = Instant::now();
        let mut f = Failover::default();
        f.answered(at(0, false), t0, HOLD);
        f.answered(at(1, true), t0, HOLD);
        assert_eq!(f.kept(&copy, &only_a, Confirmed::Unanswered, t0, HOLD).len(), 1);
        f.answered(at(0, true), t0 + HOLD, HOLD);
        assert_eq!(f.spent(), 1);
        let delta = |action: ActionType| {
            let mut a = app("A", 1);
            a.instances[0].action = action;
            apps_of(vec![a])
        };
        f.listed_by(&delta(ActionType::Deleted));
        assert_eq!(f.spent(), 1);
        f.listed_by(&delta(ActionType::Modified));
        assert_eq!(f.spent(), 0);
        // Held again, spent again at the next failover (home 0)...
        assert_eq!(f.kept(&copy, &only_a, Confirmed::Unanswered, t0 + HOLD, HOLD).len(), 1);
        assert_eq!(f.answered(at(1, true), t0 + 2 * HOLD, HOLD), Some(0));
        assert_eq!((f.held(), f.spent()), (0, 1));
        // ...whose home answering again forgets the mark.
        assert_eq!(f.answered(at(0, false), t0 + 2 * HOLD, HOLD), None);
        assert_eq!(f.spent(), 0);
    }
}
