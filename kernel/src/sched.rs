//! A proportional-share scheduler: weighted fair queuing by virtual runtime.
//!
//! Pure state machine: the glue asks [`Scheduler::pick`] what to run, runs it
//! for up to [`SLICE_NS`] (or until it blocks or yields), reports the time
//! with [`Scheduler::charge`] and reports state changes with
//! [`Scheduler::set_state`]. Context switching and timers live elsewhere.
//!
//! Each entity has a virtual runtime that grows by `ns * 256 / weight` while
//! it runs, so over time every runnable entity receives CPU in proportion to
//! its weight. The runnable entity with the smallest virtual runtime runs
//! next. A monotonic floor follows the smallest runnable virtual runtime;
//! an entity that becomes runnable again is lifted to at least one slice
//! (of its own real run time) below that floor, so blocking does not bank
//! unlimited credit.

use alloc::collections::BTreeMap;
use core::fmt;

/// The scheduling quantum the glue should run an entity for before picking
/// again, and the most credit an entity keeps across a sleep.
pub const SLICE_NS: u64 = 10_000_000;
/// The weight new domains get unless told otherwise (as in `xl`).
pub const DEFAULT_WEIGHT: u16 = 256;
/// The weight at which virtual time runs at the speed of real time.
const UNIT_WEIGHT: u128 = 256;

/// What an entity is doing, as far as the scheduler cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Wants the CPU.
    Runnable,
    /// Waiting for an event or a deadline.
    Blocked,
    /// Stopped by the operator (or not yet started).
    Paused,
}

/// Why a scheduler operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedError {
    /// A weight outside 1..=65535 (that is, 0).
    BadWeight(u16),
    /// No entity with that key.
    NoSuchEntity,
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadWeight(w) => write!(f, "weight {w} is out of range (1 to 65535)"),
            Self::NoSuchEntity => f.write_str("no such scheduling entity"),
        }
    }
}

#[derive(Debug, Clone)]
struct Entity {
    weight: u16,
    state: State,
    /// Virtual runtime; u128 so it cannot overflow in any realistic uptime
    /// even at weight 1.
    vruntime: u128,
    /// `(ns * 256) mod weight` left over from earlier charges, so many short
    /// runs add up exactly.
    remainder: u128,
    /// Total real run time charged.
    cpu_ns: u64,
}

/// A weighted fair scheduler over entities keyed by `K` (a domain or vCPU
/// ID). Operations are `O(n)` at worst; it is meant for a few hundred
/// entities.
#[derive(Debug, Clone)]
pub struct Scheduler<K: Copy + Ord> {
    entities: BTreeMap<K, Entity>,
    /// Never decreases; the smallest runnable virtual runtime seen.
    floor: u128,
}

impl<K: Copy + Ord> Default for Scheduler<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Ord> Scheduler<K> {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self { entities: BTreeMap::new(), floor: 0 }
    }

    /// Adds entity `k` with `weight`, [`State::Paused`], at the current
    /// minimum virtual runtime (so it neither owes nor is owed time).
    ///
    /// Returns false, changing nothing, for weight 0 (invalid) or a key that
    /// is already present.
    pub fn add(&mut self, k: K, weight: u16) -> bool {
        if check_weight(weight).is_err() || self.entities.contains_key(&k) {
            return false;
        }
        self.update_floor();
        self.entities.insert(k, Entity { weight, state: State::Paused, vruntime: self.floor, remainder: 0, cpu_ns: 0 });
        true
    }

    /// Removes entity `k`; false if there was none.
    pub fn remove(&mut self, k: K) -> bool {
        let removed = self.entities.remove(&k).is_some();
        self.update_floor();
        removed
    }

    /// Changes the weight of `k` (1..=65535); takes effect from the next
    /// charge.
    pub fn set_weight(&mut self, k: K, weight: u16) -> Result<(), SchedError> {
        check_weight(weight)?;
        let e = self.entities.get_mut(&k).ok_or(SchedError::NoSuchEntity)?;
        e.weight = weight;
        e.remainder = 0;
        Ok(())
    }

    /// The weight of `k`, if present.
    pub fn weight(&self, k: K) -> Option<u16> {
        self.entities.get(&k).map(|e| e.weight)
    }

    /// Sets the state of `k` (no effect for an unknown key). An entity that
    /// becomes runnable gets at most one slice of its own run time as credit
    /// over the currently most-deserving runnable entity.
    pub fn set_state(&mut self, k: K, s: State) {
        self.update_floor();
        let floor = self.floor;
        let Some(e) = self.entities.get_mut(&k) else {
            return;
        };
        if e.state != State::Runnable && s == State::Runnable {
            let lag = u128::from(SLICE_NS) * UNIT_WEIGHT / u128::from(e.weight.max(1));
            e.vruntime = e.vruntime.max(floor.saturating_sub(lag));
        }
        e.state = s;
        self.update_floor();
    }

    /// The state of `k`, if present.
    pub fn state(&self, k: K) -> Option<State> {
        self.entities.get(&k).map(|e| e.state)
    }

    /// Records that `k` ran for `ran_ns`: its CPU time grows by `ran_ns` and
    /// its virtual runtime by `ran_ns * 256 / weight` (exactly, over many
    /// charges). Works in any state (an entity may block during its slice);
    /// no effect for an unknown key.
    pub fn charge(&mut self, k: K, ran_ns: u64) {
        let Some(e) = self.entities.get_mut(&k) else {
            return;
        };
        let weight = u128::from(e.weight.max(1));
        let scaled = u128::from(ran_ns) * UNIT_WEIGHT + e.remainder;
        e.vruntime = e.vruntime.saturating_add(scaled / weight);
        e.remainder = scaled % weight;
        e.cpu_ns = e.cpu_ns.saturating_add(ran_ns);
        self.update_floor();
    }

    /// The runnable entity to run next: the smallest virtual runtime, the
    /// lowest key on a tie; `None` if nothing is runnable.
    pub fn pick(&self) -> Option<K> {
        self.min_runnable().map(|(k, _)| k)
    }

    /// Total run time charged to `k` (0 for an unknown key).
    pub fn cpu_time_ns(&self, k: K) -> u64 {
        self.entities.get(&k).map_or(0, |e| e.cpu_ns)
    }

    /// The virtual runtime of `k`, for diagnostics.
    pub fn vruntime(&self, k: K) -> Option<u128> {
        self.entities.get(&k).map(|e| e.vruntime)
    }

    /// How many entities are runnable.
    pub fn runnable_count(&self) -> usize {
        self.entities.values().filter(|e| e.state == State::Runnable).count()
    }

    /// How many entities there are.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether there are no entities.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    fn min_runnable(&self) -> Option<(K, u128)> {
        let mut best: Option<(K, u128)> = None;
        // Key order, and only a strictly smaller vruntime replaces the best,
        // so ties go to the lowest key.
        for (&k, e) in &self.entities {
            if e.state == State::Runnable && best.is_none_or(|(_, v)| e.vruntime < v) {
                best = Some((k, e.vruntime));
            }
        }
        best
    }

    fn update_floor(&mut self) {
        if let Some((_, v)) = self.min_runnable() {
            self.floor = self.floor.max(v);
        }
    }
}

fn check_weight(weight: u16) -> Result<(), SchedError> {
    if weight == 0 {
        Err(SchedError::BadWeight(weight))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    /// Runs `slices` rounds of pick + charge(SLICE_NS); returns the picks.
    fn run(s: &mut Scheduler<u32>, slices: usize) -> Vec<u32> {
        let mut picks = Vec::new();
        for _ in 0..slices {
            let Some(k) = s.pick() else { break };
            s.charge(k, SLICE_NS);
            picks.push(k);
        }
        picks
    }

    fn runnable(weights: &[u16]) -> Scheduler<u32> {
        let mut s = Scheduler::new();
        for (i, &w) in weights.iter().enumerate() {
            assert!(s.add(i as u32 + 1, w));
            s.set_state(i as u32 + 1, State::Runnable);
        }
        s
    }

    fn assert_ratio(actual: u64, expected: f64, tolerance: f64) {
        let actual = actual as f64;
        assert!(
            (actual - expected).abs() <= expected * tolerance,
            "got {actual}, expected {expected} within {tolerance}"
        );
    }

    #[test]
    fn weights_one_to_two() {
        let mut s = runnable(&[256, 512]);
        run(&mut s, 1000); // 10 s
        let (a, b) = (s.cpu_time_ns(1), s.cpu_time_ns(2));
        assert_eq!(a + b, 10_000_000_000);
        assert_ratio(b, 2.0 * a as f64, 0.01);
    }

    #[test]
    fn weights_one_one_two() {
        let mut s = runnable(&[256, 256, 512]);
        run(&mut s, 1000);
        let total = 10_000_000_000f64;
        assert_ratio(s.cpu_time_ns(1), total / 4.0, 0.01);
        assert_ratio(s.cpu_time_ns(2), total / 4.0, 0.01);
        assert_ratio(s.cpu_time_ns(3), total / 2.0, 0.01);
    }

    #[test]
    fn equal_weights_alternate() {
        let mut s = runnable(&[256, 256]);
        assert_eq!(run(&mut s, 6), [1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn ties_go_to_the_lowest_key() {
        let mut s = Scheduler::new();
        for k in [7u32, 3, 5] {
            assert!(s.add(k, 256));
            s.set_state(k, State::Runnable);
        }
        assert_eq!(s.pick(), Some(3));
    }

    #[test]
    fn blocked_entity_gets_nothing_and_cannot_starve_others_on_wake() {
        let mut s = runnable(&[256, 256, 256]);
        s.set_state(3, State::Blocked);
        let picks = run(&mut s, 500);
        assert!(!picks.contains(&3));
        assert_eq!(s.cpu_time_ns(3), 0);
        assert_eq!(s.runnable_count(), 2);

        s.set_state(3, State::Runnable);
        let picks = run(&mut s, 300);
        // The sleeper runs first (it is owed at most one slice) ...
        assert_eq!(picks[0], 3);
        // ... but never more than two slices in a row (its credit plus its
        // normal turn), and the others wait at most one slice longer than
        // their normal two.
        for k in 1..=3u32 {
            let mut gap = 0;
            let mut max_gap = 0;
            for &p in &picks {
                gap = if p == k { 0 } else { gap + 1 };
                max_gap = max_gap.max(gap);
            }
            assert!(max_gap <= 3, "entity {k} waited {max_gap} slices");
        }
        let longest_run = picks.chunk_by(|a, b| a == b).filter(|c| c[0] == 3).map(<[u32]>::len).max().unwrap();
        assert!(longest_run <= 2);
        // Over the window the sleeper gets its third plus at most one slice.
        let c = picks.iter().filter(|&&p| p == 3).count();
        assert!((100..=101).contains(&c), "{c}");
    }

    #[test]
    fn waking_heavy_entity_gets_one_slice_of_credit() {
        // A heavy sleeper's credit is one slice of real time, not
        // `weight / 256` slices.
        let mut s = runnable(&[256, 65535]);
        s.set_state(2, State::Blocked);
        run(&mut s, 100);
        s.set_state(2, State::Runnable);
        let v1 = s.vruntime(1).unwrap();
        let v2 = s.vruntime(2).unwrap();
        assert_eq!(v1 - v2, u128::from(SLICE_NS) * 256 / 65535);
        // An entity that slept briefly keeps its own (larger) vruntime.
        let mut s = runnable(&[256, 256]);
        run(&mut s, 3);
        let before = s.vruntime(2).unwrap();
        s.set_state(2, State::Blocked);
        s.set_state(2, State::Runnable);
        assert_eq!(s.vruntime(2).unwrap(), before);
    }

    #[test]
    fn pausing() {
        let mut s = runnable(&[256, 256]);
        s.set_state(2, State::Paused);
        assert_eq!(s.state(2), Some(State::Paused));
        run(&mut s, 100);
        assert_eq!(s.cpu_time_ns(2), 0);
        assert_eq!(s.cpu_time_ns(1), 100 * SLICE_NS);
        s.set_state(1, State::Paused);
        assert_eq!(s.pick(), None);
        assert_eq!(s.runnable_count(), 0);
        s.set_state(2, State::Runnable);
        s.set_state(1, State::Runnable);
        run(&mut s, 100);
        // Both were paused; neither is owed more than a slice.
        assert!(s.cpu_time_ns(2).abs_diff(50 * SLICE_NS) <= SLICE_NS);
    }

    #[test]
    fn new_entities_start_paused_at_the_current_minimum() {
        let mut s = runnable(&[256]);
        run(&mut s, 50);
        assert!(s.add(2, 256));
        assert_eq!(s.state(2), Some(State::Paused));
        assert_eq!(s.pick(), Some(1));
        assert_eq!(s.vruntime(2), s.vruntime(1));
        s.set_state(2, State::Runnable);
        let picks = run(&mut s, 10);
        assert_eq!(picks.iter().filter(|&&p| p == 2).count(), 5);
    }

    #[test]
    fn removal() {
        let mut s = runnable(&[256, 256]);
        assert!(s.remove(1));
        assert!(!s.remove(1));
        assert_eq!(s.len(), 1);
        assert_eq!(s.state(1), None);
        assert_eq!(s.cpu_time_ns(1), 0);
        assert_eq!(run(&mut s, 3), [2, 2, 2]);
        assert!(s.remove(2));
        assert!(s.is_empty());
        assert_eq!(s.pick(), None);
        // Unknown keys are ignored.
        s.charge(9, 5);
        s.set_state(9, State::Runnable);
        assert_eq!(s.state(9), None);
    }

    #[test]
    fn weights_are_checked() {
        let mut s: Scheduler<u32> = Scheduler::default();
        assert!(!s.add(1, 0), "weight 0 is refused");
        assert!(s.is_empty());
        assert!(s.add(1, 1));
        s.set_state(1, State::Runnable);
        s.charge(1, 5);
        assert!(!s.add(1, 256), "a duplicate is refused");
        assert_eq!(s.weight(1), Some(1));
        assert_eq!(s.state(1), Some(State::Runnable));
        assert_eq!(s.cpu_time_ns(1), 5);
        assert_eq!(s.set_weight(1, 0), Err(SchedError::BadWeight(0)));
        assert_eq!(s.set_weight(2, 5), Err(SchedError::NoSuchEntity));
        s.set_weight(1, 65535).unwrap();
        assert_eq!(s.weight(1), Some(65535));
        assert_eq!(SchedError::BadWeight(0).to_string(), "weight 0 is out of range (1 to 65535)");
    }

    #[test]
    fn set_weight_changes_the_share() {
        let mut s = runnable(&[256, 256]);
        run(&mut s, 100);
        s.set_weight(2, 768).unwrap();
        let (a0, b0) = (s.cpu_time_ns(1), s.cpu_time_ns(2));
        run(&mut s, 1000);
        let (a, b) = (s.cpu_time_ns(1) - a0, s.cpu_time_ns(2) - b0);
        assert_ratio(b, 3.0 * a as f64, 0.01);
    }

    #[test]
    fn short_runs_add_up_exactly() {
        let mut s = runnable(&[65535]);
        for _ in 0..65535 {
            s.charge(1, 1);
        }
        assert_eq!(s.vruntime(1), Some(256));
        assert_eq!(s.cpu_time_ns(1), 65535);
        // A heavy entity that yields after 100 ns every time still yields the
        // CPU to a light one eventually.
        let mut s = runnable(&[65535, 1]);
        let mut others = 0;
        for _ in 0..100_000 {
            match s.pick() {
                Some(1) => s.charge(1, 100),
                Some(k) => {
                    others += 1;
                    s.charge(k, 100);
                }
                None => unreachable!(),
            }
        }
        assert!(others > 0);
    }

    #[test]
    fn fairness_with_many_entities() {
        let weights: Vec<u16> = (0..60).map(|i| [1, 64, 256, 300, 1000, 4096][i % 6]).collect();
        let mut s = runnable(&weights);
        let slices = 100_000;
        run(&mut s, slices);
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let all = slices as f64 * SLICE_NS as f64;
        for (i, &w) in weights.iter().enumerate() {
            let expected = all * f64::from(w) / total;
            let actual = s.cpu_time_ns(i as u32 + 1) as f64;
            // Within 1% (plus two slices of rounding) of the exact share.
            assert!(
                (actual - expected).abs() <= expected * 0.01 + 2.0 * SLICE_NS as f64,
                "entity {i} weight {w}: {actual} vs {expected}"
            );
        }
    }

    #[test]
    fn huge_charges_do_not_overflow() {
        let mut s = runnable(&[1, 1]);
        for _ in 0..10 {
            s.charge(1, u64::MAX);
        }
        assert_eq!(s.cpu_time_ns(1), u64::MAX);
        assert_eq!(s.pick(), Some(2));
        s.set_state(2, State::Blocked);
        s.set_state(2, State::Runnable);
        assert_eq!(s.pick(), Some(2));
    }

    use crate::testutil::Rng;

    #[test]
    fn random_operations_keep_invariants() {
        let mut s: Scheduler<u8> = Scheduler::new();
        let mut rng = Rng(0xC0FF_EE00_1234_5678);
        for _ in 0..50_000 {
            let k = (rng.next() % 24) as u8;
            match rng.next() % 8 {
                0 => {
                    let _ = s.add(k, rng.next() as u16);
                }
                1 => {
                    s.remove(k);
                }
                2 => {
                    let _ = s.set_weight(k, rng.next() as u16);
                }
                3 => s.set_state(k, [State::Runnable, State::Blocked, State::Paused][(rng.next() % 3) as usize]),
                4 => s.charge(k, rng.next() >> (rng.next() % 64)),
                _ => {
                    if let Some(p) = s.pick() {
                        assert_eq!(s.state(p), Some(State::Runnable));
                        let v = s.vruntime(p).unwrap();
                        for q in 0..24u8 {
                            if s.state(q) == Some(State::Runnable) {
                                assert!(s.vruntime(q).unwrap() >= v);
                            }
                        }
                        s.charge(p, rng.next() % (2 * SLICE_NS));
                    } else {
                        assert_eq!(s.runnable_count(), 0);
                    }
                }
            }
            assert!(s.runnable_count() <= s.len());
        }
    }
}
