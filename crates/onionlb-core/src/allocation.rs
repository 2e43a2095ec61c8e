//! Which instances' intro points go into a master descriptor.
//!
//! A client picks an intro point uniformly from the descriptor it fetched,
//! so an instance's share of new clients is its share of the descriptor's
//! intro points. Filling a descriptor round-robin over the live instances
//! gives each the same number, differing by one when the slots do not
//! divide evenly; which instances get the extra one rotates with `offset`,
//! so it evens out over descriptors and republishes. A descriptor is
//! filled as fully as the live instances allow, up to its limit: an
//! instance with more intro points than its share gets more slots only
//! when others cannot fill theirs.

/// Takes up to `limit` items round-robin from `per_instance`, starting with
/// instance `offset` (modulo their number).
pub fn spread<T: Clone>(per_instance: &[Vec<T>], limit: usize, offset: usize) -> Vec<T> {
    let instances = per_instance.len();
    let mut chosen = Vec::with_capacity(limit);
    if instances == 0 {
        return chosen;
    }
    let deepest = per_instance.iter().map(Vec::len).max().unwrap_or(0);
    'rounds: for round in 0..deepest {
        for step in 0..instances {
            if chosen.len() == limit {
                break 'rounds;
            }
            if let Some(item) = per_instance[(offset + step) % instances].get(round) {
                chosen.push(item.clone());
            }
        }
    }
    chosen
}

#[cfg(test)]
mod test {
    use super::*;

    fn counts(chosen: &[(usize, usize)], instances: usize) -> Vec<usize> {
        (0..instances)
            .map(|i| chosen.iter().filter(|(inst, _)| *inst == i).count())
            .collect()
    }

    fn instances(sizes: &[usize]) -> Vec<Vec<(usize, usize)>> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i, j)).collect())
            .collect()
    }

    #[test]
    fn equal_shares_not_a_fixed_number_each() {
        // 3 instances with 3 intro points each: all 9 fit.
        assert_eq!(counts(&spread(&instances(&[3, 3, 3]), 20, 0), 3), [3, 3, 3]);
        // 10 instances with 3 each: 20 slots, 2 each.
        assert_eq!(counts(&spread(&instances(&[3; 10]), 20, 0), 10), [2; 10]);
        // 6 instances: 20 slots -> 4, 4, 3, 3, 3, 3, extra slots rotating.
        assert_eq!(
            counts(&spread(&instances(&[5; 6]), 20, 0), 6),
            [4, 4, 3, 3, 3, 3]
        );
        assert_eq!(
            counts(&spread(&instances(&[5; 6]), 20, 2), 6),
            [3, 3, 4, 4, 3, 3]
        );
    }

    #[test]
    fn fills_from_deeper_instances_when_others_run_out() {
        assert_eq!(
            counts(&spread(&instances(&[1, 10, 3]), 20, 0), 3),
            [1, 10, 3]
        );
        assert_eq!(counts(&spread(&instances(&[1, 30]), 20, 0), 2), [1, 19]);
        assert!(spread(&instances(&[0, 0]), 20, 0).is_empty());
        assert!(spread::<u8>(&[], 20, 0).is_empty());
    }

    #[test]
    fn many_instances_each_get_at_most_one() {
        let chosen = spread(&instances(&[3; 120]), 20, 100);
        assert_eq!(chosen.len(), 20);
        let c = counts(&chosen, 120);
        assert!(c.iter().all(|&n| n <= 1));
        assert_eq!(c[100..120].iter().sum::<usize>(), 20);
    }
}
