//! Choosing a replica for one request. Pure: the caller passes the candidates'
//! outstanding-request counts and the random numbers, so the choice is
//! reproducible in tests and in the simulator.

/// How a service spreads requests over its routable replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BalanceAlgorithm {
    /// Least outstanding requests with power-of-two-choices: pick two replicas
    /// at random, send to the one with fewer requests in flight. Near-optimal
    /// spread without a global scan or lock.
    #[default]
    LeastOutstanding,
    /// Each replica in turn.
    RoundRobin,
}

impl BalanceAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceAlgorithm::LeastOutstanding => "least_outstanding",
            BalanceAlgorithm::RoundRobin => "round_robin",
        }
    }
}

/// Power-of-two-choices: `a` and `b` are two random draws (any `u64`); returns
/// the index of the less loaded of the two candidates they select. Ties go to
/// the first draw. `outstanding` must not be empty.
pub fn pick_two_choices(outstanding: &[u64], a: u64, b: u64) -> usize {
    let n = outstanding.len();
    debug_assert!(n > 0, "pick from an empty set");
    if n == 1 {
        return 0;
    }
    let i = (a % n as u64) as usize;
    // Draw the second from the other n-1 slots so the two are always distinct.
    let mut j = (b % (n as u64 - 1)) as usize;
    if j >= i {
        j += 1;
    }
    if outstanding[j] < outstanding[i] {
        j
    } else {
        i
    }
}

/// Round robin: the `counter`-th request goes to replica `counter mod n`.
pub fn pick_round_robin(len: usize, counter: u64) -> usize {
    debug_assert!(len > 0, "pick from an empty set");
    (counter % len as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_choices_prefers_the_less_loaded() {
        let loads = [5, 0, 9];
        // draws select 0 and then (b % 2 = 0 -> slot 0 skipped -> 1)
        assert_eq!(pick_two_choices(&loads, 0, 0), 1);
        // draws select 2 and 0: 0 has fewer in flight
        assert_eq!(pick_two_choices(&loads, 2, 0), 0);
    }

    #[test]
    fn two_choices_never_picks_the_same_slot_twice() {
        let loads = [1, 1];
        for a in 0..10 {
            for b in 0..10 {
                let i = (a % 2) as usize;
                // equal loads: the first draw wins
                assert_eq!(pick_two_choices(&loads, a, b), i);
            }
        }
    }

    #[test]
    fn two_choices_never_picks_the_busiest_of_three_or_more() {
        let loads = [3, 7, 100, 4];
        for a in 0..50 {
            for b in 0..50 {
                assert_ne!(pick_two_choices(&loads, a, b), 2);
            }
        }
    }

    #[test]
    fn round_robin_cycles() {
        let picks: Vec<usize> = (0..6).map(|c| pick_round_robin(3, c)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }
}
