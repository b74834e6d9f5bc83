//! tower 0.5's `TpsBudget` tests, on this one (paused time).
use super::*;

#[test]
fn empty() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _g = rt.enter();
    let b = TpsBudget::new(Duration::from_secs(1), 0, 1.0);
    assert!(!b.withdraw());
}

#[tokio::test(start_paused = true)]
async fn leaky() {
    let b = TpsBudget::new(Duration::from_secs(1), 0, 1.0);
    b.deposit();
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(!b.withdraw());
}

#[tokio::test(start_paused = true)]
async fn slots() {
    let b = TpsBudget::new(Duration::from_secs(1), 0, 0.5);
    b.deposit();
    b.deposit();
    tokio::time::advance(Duration::from_millis(901)).await;
    assert!(b.withdraw());
    tokio::time::advance(Duration::from_millis(2001)).await;
    b.deposit();
    tokio::time::advance(Duration::from_millis(301)).await;
    b.deposit();
    tokio::time::advance(Duration::from_millis(801)).await;
    b.deposit();
    assert!(b.withdraw());
}

#[tokio::test(start_paused = true)]
async fn reserve() {
    let b = TpsBudget::new(Duration::from_secs(1), 5, 1.0);
    for _ in 0..5 {
        assert!(b.withdraw());
    }
    assert!(!b.withdraw());
    // The ttl's fraction counts: 4 per second over 2.5 s is 10 (its
    // whole seconds alone gave 8; helper 204).
    let b = TpsBudget::new(Duration::from_millis(2500), 4, 0.0);
    for _ in 0..10 {
        assert!(b.withdraw());
    }
    assert!(!b.withdraw());
}

/// A refund gives a withdrawal back while it counts, and nothing once
/// it expired (that would add a retry the budget never held).
#[tokio::test(start_paused = true)]
async fn a_refund_gives_back_only_a_withdrawal_that_still_counts() {
    let b = TpsBudget::new(Duration::from_secs(1), 1, 0.0);
    let taken = b.take().unwrap();
    assert!(!b.withdraw());
    tokio::time::advance(Duration::from_millis(500)).await;
    b.refund(taken);
    assert!(b.withdraw());
    assert!(!b.withdraw());
    let taken = b.take();
    assert!(taken.is_none());
    tokio::time::advance(Duration::from_millis(1200)).await;
    let taken = b.take().unwrap();
    tokio::time::advance(Duration::from_millis(1200)).await;
    // Expired with its window: the reserve holds one retry again.
    b.refund(taken);
    assert!(b.withdraw());
    assert!(!b.withdraw());
}

/// A refund expires with its withdrawal: given back 800 ms after it
/// was taken (ttl 1 s), it is gone with it 400 ms later, when the
/// budget holds only what came since (before: the refund, in the
/// window it was made in, stayed a retry the budget never held).
#[tokio::test(start_paused = true)]
async fn a_refund_expires_with_its_withdrawal() {
    let b = TpsBudget::new(Duration::from_secs(1), 0, 1.0);
    for _ in 0..5 {
        b.deposit();
    }
    let taken: Vec<_> = std::iter::from_fn(|| b.take()).collect();
    assert_eq!(taken.len(), 5);
    tokio::time::advance(Duration::from_millis(800)).await;
    for t in taken {
        b.refund(t);
    }
    b.deposit();
    tokio::time::advance(Duration::from_millis(400)).await;
    b.deposit();
    let n = std::iter::from_fn(|| b.withdraw().then_some(())).count();
    assert_eq!(n, 2, "the two deposits since");
}

/// A refund gives back exactly what its withdrawal still takes: taken
/// at 0 (ttl 1 s, 100 ms windows), the withdrawal counts until its
/// window leaves at 1.1 s; refunded at 1.05 s, it is given back into
/// that window and both leave together (before, a withdrawal older
/// than 9 windows was not refunded, and the budget was a retry short).
#[tokio::test(start_paused = true)]
async fn a_refund_leaves_with_its_withdrawal() {
    let b = TpsBudget::new(Duration::from_secs(1), 1, 0.0);
    let taken = b.take().unwrap();
    tokio::time::advance(Duration::from_millis(1050)).await;
    assert!(!b.withdraw(), "the withdrawal still counts");
    b.refund(taken);
    assert_eq!(b.sum(), UNIT, "the reserve, given back");
    tokio::time::advance(Duration::from_millis(50)).await;
    b.deposit();
    assert_eq!(b.sum(), UNIT, "the reserve, both gone");
    assert!(b.withdraw());
    assert!(!b.withdraw());
}

/// A deposit counts for the ttl (10 windows) to a window more, whatever
/// the cadence of the calls: with a call every `step` (ttl 10 s, ratio
/// 1), the budget holds the deposits of the last 10 to 11 s. A window
/// that ran past its end (a call 1.2 windows after its start) emptied
/// the next as if it had passed with no call, as tower's loop does: a
/// call every 300 ms kept 21 deposits, not 33 (6.3 s), and every
/// 1001 ms kept 6, not 9 (and windows that started at the call that
/// ended the last one, without that, kept 41 of a call every 300 ms).
#[tokio::test(start_paused = true)]
async fn deposits_count_for_the_ttl_at_any_cadence() {
    for step in [
        100_u64, 250, 300, 500, 700, 999, 1000, 1001, 1100, 1500, 2500,
    ] {
        let b = TpsBudget::new(Duration::from_secs(10), 0, 1.0);
        for _ in 0..30_000 / step {
            tokio::time::advance(Duration::from_millis(step)).await;
            b.deposit();
        }
        let kept = std::iter::from_fn(|| b.withdraw().then_some(())).count() as u64;
        let (ttl, most) = (10_000 / step, 11_000 / step + 1);
        assert!(
            (ttl..=most).contains(&kept),
            "a call every {step} ms: {kept} deposits kept, not {ttl} to {most}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn ratio_of_deposits() {
    let b = TpsBudget::new(Duration::from_secs(10), 0, 0.2);
    for _ in 0..10 {
        b.deposit();
    }
    assert!(b.withdraw());
    assert!(b.withdraw());
    assert!(!b.withdraw());
}

/// Retries allowed by `deposits` requests under `ratio` (no reserve).
fn allowed(ratio: f32, deposits: usize) -> usize {
    let b = TpsBudget::new(Duration::from_secs(10), 0, ratio);
    for _ in 0..deposits {
        b.deposit();
    }
    std::iter::from_fn(|| b.withdraw().then_some(())).count()
}

#[tokio::test(start_paused = true)]
async fn ratios_that_are_not_one_over_n() {
    // tower's `(1 / ratio) as isize` gave 10, 5 and 10 here.
    assert_eq!(allowed(0.7, 10), 7);
    assert_eq!(allowed(0.3, 10), 3);
    assert_eq!(allowed(0.55, 100), 55);
    assert_eq!(allowed(2.5, 10), 25);
    assert_eq!(allowed(1000.0, 1), 1000);
    assert_eq!(allowed(0.0, 1000), 0);
    assert_eq!(allowed(f32::NAN, 1000), 0);
}

#[tokio::test(start_paused = true)]
async fn a_long_idle_spell_costs_one_pass_over_the_windows() {
    let b = TpsBudget::new(Duration::from_secs(1), 2, 1.0);
    for _ in 0..50 {
        b.deposit();
    }
    // 1000 years of 100 ms windows: tower's loop stepped 3e11 times.
    tokio::time::advance(Duration::from_secs(1000 * 365 * 86_400)).await;
    b.deposit();
    let n = std::iter::from_fn(|| b.withdraw().then_some(())).count();
    assert_eq!(n, 3, "the reserve of 2 and the one new deposit");
}

#[test]
fn racing_withdrawals_never_exceed_the_budget() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    for round in 0..5000 {
        // A reserve of 5 retries and 10 deposits at ratio 0.5: 10. (Before
        // the fix, 5000 rounds of 8 threads on 2 cores took more than 10.)
        let b = std::sync::Arc::new(TpsBudget::new(Duration::from_secs(1), 5, 0.5));
        let _g = rt.enter();
        for _ in 0..10 {
            b.deposit();
        }
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (b, start) = (b.clone(), start.clone());
                let handle = rt.handle().clone();
                std::thread::spawn(move || {
                    let _g = handle.enter();
                    start.wait();
                    (0..20).filter(|_| b.withdraw()).count()
                })
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 10, "round {round}");
    }
}

proptest::proptest! {
    /// Within one window, deposits and withdrawals interleaved in any
    /// order never take more than `ratio` × deposits (to a millionth)
    /// plus the reserve, and taking until refused takes exactly that.
    #[test]
    fn never_more_than_ratio_plus_reserve(
        ratio_micro in 0u32..=5_000_000,
        min_per_sec in 0u32..20,
        ttl_secs in 1u64..=60,
        ops in proptest::collection::vec(proptest::bool::ANY, 0..400),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _g = rt.enter();
        let ratio = ratio_micro as f32 / 1e6;
        let b = TpsBudget::new(Duration::from_secs(ttl_secs), min_per_sec, ratio);
        let per_deposit = u64::from(ratio_micro);
        let reserve = u64::from(min_per_sec) * ttl_secs;
        let (mut deposits, mut taken) = (0u64, 0u64);
        for deposit in ops {
            if deposit {
                b.deposit();
                deposits += 1;
            } else if b.withdraw() {
                taken += 1;
            }
            proptest::prop_assert!(taken <= per_deposit * deposits / 1_000_000 + reserve);
        }
        while b.withdraw() {
            taken += 1;
        }
        proptest::prop_assert_eq!(taken, per_deposit * deposits / 1_000_000 + reserve);
    }
}

/// A deposit taken back counts no more: at once, from a committed window
/// later (ttl 1 s, 100 ms windows), and not at all once it expired (that
/// would take a retry the budget holds from newer deposits).
#[tokio::test(start_paused = true)]
async fn a_deposit_taken_back_leaves_from_its_own_window() {
    let b = TpsBudget::new(Duration::from_secs(1), 0, 1.0);
    let at = Instant::now();
    b.deposit_at(at);
    b.take_back(at);
    assert_eq!(b.sum(), 0, "taken back in its window");
    let at = Instant::now();
    b.deposit_at(at);
    b.deposit_at(at);
    tokio::time::advance(Duration::from_millis(450)).await;
    b.deposit();
    b.take_back(at);
    assert_eq!(b.sum(), 2 * UNIT, "one of the two, from their window");
    tokio::time::advance(Duration::from_millis(700)).await;
    // The first window left at 1.1 s, with what it held.
    b.take_back(at);
    assert_eq!(b.sum(), UNIT, "an expired deposit is not taken back");
    assert!(b.withdraw());
    assert!(!b.withdraw());
}
