//! Which instances' intro points go into a master descriptor.
//!
//! A client picks an intro point uniformly from the descriptor it fetched,
//! so an instance's share of new clients is its share of the descriptor's
//! intro points. Filling a descriptor round-robin over the live instances
//! gives each the same number, differing by one when the slots do not
//! divide evenly; which instances get the extra one rotates with `offset`,
//! so it evens out over descriptors and republishes.
//!
//! No instance gets more slots in a descriptor than the fewest intro
//! points a live instance has ([`fair_cap`]), but never fewer than
//! [`NORMAL_INTRO_POINTS`]: a C tor instance keeps its own intro points
//! for each of its two descriptors, so one whose both descriptors are
//! known offers six while one seen through a single descriptor offers
//! three, and filling the descriptor from whatever is there gave the
//! first 5 of 8 slots (measured on the private network: 77 of 120
//! clients). An instance with fewer than the normal three, as while its
//! tor is establishing them, has a smaller share for that while rather
//! than shrinking everyone's descriptor.
//!
//! # Distinct descriptors per HSDir
//!
//! One descriptor holds at most 20 intro points, but nothing makes every
//! HSDir hold the same descriptor. A client fetches from one HSDir chosen
//! uniformly among the `hsdir_spread_fetch` HSDirs of each of the
//! `hsdir_n_replicas` replicas (3 x 2 = 6 by default), then picks an intro
//! point uniformly from that descriptor. So when every fetchable HSDir `h`
//! holds a full descriptor, instance `i`'s share of clients is
//!
//! ```text
//!     share(i) = sum over h of (1 / |F|) * (slots of i in h / 20)
//! ```
//!
//! where `F` is the set of fetchable HSDirs: its slots over all of `F`
//! divided by `20 * |F|` (120 by default). [`plan`] deals those slots out
//! as one round-robin stream over the instances, cut into descriptors of
//! 20: every instance gets `120 / N` slots, give or take one, so up to 120
//! instances each get an equal share (with more, some get none). HSDirs
//! that only store (the last of each replica's `spread_store`) are never
//! asked by clients; they get copies of the fetchable ones' descriptors,
//! in case the ring shifts.

/// Intro points a C tor instance keeps per descriptor by default
/// (`HiddenServiceNumIntroductionPoints`).
pub const NORMAL_INTRO_POINTS: usize = 3;

/// The most slots one instance gets in one descriptor: the fewest intro
/// points any instance with some has, or [`NORMAL_INTRO_POINTS`] if that
/// is more.
pub fn fair_cap<T>(per_instance: &[Vec<T>]) -> usize {
    let fewest = per_instance
        .iter()
        .map(Vec::len)
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0);
    fewest.max(NORMAL_INTRO_POINTS)
}

/// Takes up to `limit` items round-robin from `per_instance`, starting with
/// instance `offset` (modulo their number), at most [`fair_cap`] from each.
pub fn spread<T: Clone>(per_instance: &[Vec<T>], limit: usize, offset: usize) -> Vec<T> {
    let order = rotation(per_instance.len(), offset);
    let cap = fair_cap(per_instance);
    let none = vec![0; per_instance.len()];
    fill_neediest(per_instance, &order, &none, limit, cap, &|_: &T| None::<()>)
        .into_iter()
        .map(|(_, item)| item)
        .collect()
}

/// Instance indices `0..n` starting at `offset`.
fn rotation(n: usize, offset: usize) -> Vec<usize> {
    (0..n).map(|step| (offset + step) % n.max(1)).collect()
}

/// Takes up to `limit` items one at a time, each from the instance with
/// the fewest slots (`before`, plus those taken here; ties in `order`)
/// that has an item on a relay not yet taken, at most `cap` from each:
/// with `before` all equal, round-robin over `order`. Never two on the
/// same relay (as `relay` tells; `None` conflicts with nothing): a C tor
/// client only ever introduces itself through the first intro point a
/// descriptor lists on a relay (see the module documentation). Returns
/// each item with its instance's index.
fn fill_neediest<T: Clone, K: PartialEq>(
    per_instance: &[Vec<T>],
    order: &[usize],
    before: &[usize],
    limit: usize,
    cap: usize,
    relay: &impl Fn(&T) -> Option<K>,
) -> Vec<(usize, T)> {
    let mut chosen = Vec::with_capacity(limit);
    let mut used: Vec<Vec<bool>> = per_instance.iter().map(|v| vec![false; v.len()]).collect();
    let mut here = vec![0usize; per_instance.len()];
    let mut relays: Vec<K> = Vec::new();
    while chosen.len() < limit {
        let pick = order
            .iter()
            .filter(|&&i| here[i] < cap)
            .filter_map(|&i| {
                let j = (0..per_instance[i].len()).find(|&j| {
                    !used[i][j] && relay(&per_instance[i][j]).is_none_or(|r| !relays.contains(&r))
                })?;
                Some((i, j))
            })
            .min_by_key(|&(i, _)| before[i] + here[i]);
        let Some((i, j)) = pick else {
            break;
        };
        let item = &per_instance[i][j];
        used[i][j] = true;
        if let Some(r) = relay(item) {
            relays.push(r);
        }
        here[i] += 1;
        chosen.push((i, item.clone()));
    }
    chosen
}

/// One descriptor of a plan: its intro points and the HSDirs that get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDescriptor<T, D> {
    /// The intro points it carries.
    pub intro_points: Vec<T>,
    /// The HSDirs it is uploaded to.
    pub hsdirs: Vec<D>,
}

/// Plans the descriptors of one slot: `fetchable` are the HSDirs clients
/// fetch from, `store` all HSDirs that store it (a superset, in ring
/// order). When every live intro point fits in one descriptor, that one
/// goes everywhere; otherwise each fetchable HSDir gets its own (see the
/// module documentation for the arithmetic). No instance has more than
/// [`fair_cap`] slots in any descriptor.
pub fn plan<T: Clone, D: Clone + PartialEq, K: PartialEq>(
    per_instance: &[Vec<T>],
    fetchable: &[D],
    store: &[D],
    limit: usize,
    offset: usize,
    relay: impl Fn(&T) -> Option<K>,
) -> Vec<PlannedDescriptor<T, D>> {
    let instances = per_instance.len();
    let cap = fair_cap(per_instance);
    let total: usize = per_instance.iter().map(|v| v.len().min(cap)).sum();
    let order = rotation(instances, offset);
    let mut slots = vec![0usize; instances];
    let single = fill_neediest(per_instance, &order, &slots, limit, cap, &relay);
    if single.len() == total || fetchable.len() <= 1 {
        return vec![PlannedDescriptor {
            intro_points: single.into_iter().map(|(_, item)| item).collect(),
            hsdirs: store.to_vec(),
        }];
    }
    // Each slot goes to the instance with the fewest slots so far over
    // all descriptors (ties in rotation from `offset`): without relay
    // conflicts this deals one round-robin stream over the descriptors,
    // and with them an instance left short in one descriptor takes its
    // next intro points in the next before the others take their relays.
    let mut planned: Vec<PlannedDescriptor<T, D>> = Vec::with_capacity(fetchable.len());
    for hsdir in fetchable {
        let chosen = fill_neediest(per_instance, &order, &slots, limit, cap, &relay);
        for (i, _) in &chosen {
            slots[*i] += 1;
        }
        planned.push(PlannedDescriptor {
            intro_points: chosen.into_iter().map(|(_, item)| item).collect(),
            hsdirs: vec![hsdir.clone()],
        });
    }
    let store_only = store.iter().filter(|dir| !fetchable.contains(dir));
    for (j, hsdir) in store_only.enumerate() {
        let copy_of = j % planned.len();
        planned[copy_of].hsdirs.push(hsdir.clone());
    }
    planned
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
    fn no_instance_outweighs_the_fewest_beyond_the_normal_three() {
        // Both descriptors of one instance known, one of the other's: an
        // even split, not 6 to 3.
        assert_eq!(counts(&spread(&instances(&[6, 3]), 20, 0), 2), [3, 3]);
        assert_eq!(counts(&spread(&instances(&[6, 6]), 20, 0), 2), [6, 6]);
        assert_eq!(counts(&spread(&instances(&[5, 4]), 20, 1), 2), [4, 4]);
        // One still establishing its intro points does not shrink the
        // others below three.
        assert_eq!(
            counts(&spread(&instances(&[1, 10, 3]), 20, 0), 3),
            [1, 3, 3]
        );
        assert_eq!(counts(&spread(&instances(&[0, 30]), 20, 0), 2), [0, 20]);
        assert_eq!(counts(&spread(&instances(&[30]), 20, 0), 1), [20]);
        assert!(spread(&instances(&[0, 0]), 20, 0).is_empty());
        assert!(spread::<u8>(&[], 20, 0).is_empty());
    }

    #[test]
    fn unequal_instances_share_evenly_over_distinct_descriptors() {
        // As measured on the private network: 6 and 3 intro points, 2 on
        // one relay, which the single descriptor cannot hold both of.
        let relay = |&(i, j): &(usize, usize)| Some(if (i, j) == (1, 0) { 0 } else { 10 * i + j });
        let store = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let fetchable = &store[..6];
        for offset in 0..4 {
            let plan = plan(&instances(&[6, 3]), fetchable, &store, 20, offset, relay);
            let totals = slot_totals(&plan, fetchable, 2);
            // The descriptor where the conflict cost instance 1 a slot
            // is made up for by the next leading with it.
            assert!(
                totals[0].abs_diff(totals[1]) <= 1,
                "offset {offset}: {plan:?}"
            );
        }
    }

    /// Each instance's client share under a plan, in slots out of
    /// `20 * fetchable`.
    fn slot_totals(
        plan: &[PlannedDescriptor<(usize, usize), u8>],
        fetchable: &[u8],
        instances: usize,
    ) -> Vec<usize> {
        let mut totals = vec![0; instances];
        for descriptor in plan {
            let fetched = descriptor
                .hsdirs
                .iter()
                .filter(|d| fetchable.contains(d))
                .count();
            for (instance, _) in &descriptor.intro_points {
                totals[*instance] += fetched;
            }
        }
        totals
    }

    fn no_relay(_: &(usize, usize)) -> Option<()> {
        None
    }

    #[test]
    fn two_intro_points_on_one_relay_never_share_a_descriptor() {
        // 12 instances with 3 intro points each on only 5 relays, most on
        // the first three (as bandwidth-weighted choice does): relay of
        // instance i's point j.
        let relay = |&(i, j): &(usize, usize)| Some(if j < 2 { (i + j) % 3 } else { 3 + i % 2 });
        let store = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let fetchable = &store[..6];
        let plan = plan(&instances(&[3; 12]), fetchable, &store, 20, 0, relay);
        assert_eq!(plan.len(), 6);
        for descriptor in &plan {
            let mut relays: Vec<usize> = descriptor.intro_points.iter().filter_map(relay).collect();
            relays.sort_unstable();
            let before = relays.len();
            relays.dedup();
            assert_eq!(relays.len(), before, "{descriptor:?}");
            assert_eq!(before, 5, "every relay used once: {descriptor:?}");
        }
        // Every instance is reachable through some fetchable HSDir.
        let totals = slot_totals(&plan, fetchable, 12);
        assert!(totals.iter().all(|&t| t > 0), "{totals:?}");
        // Conflicts within what would fit in one descriptor also split it.
        let plan = super::plan(&instances(&[3, 3, 3]), fetchable, &store, 20, 0, relay);
        assert_eq!(plan.len(), 6);
    }

    #[test]
    fn crowded_relays_still_give_every_instance_a_share() {
        // As on the private network: 9 relays, most intro points on the
        // 3 fastest. Instance i's points: two on those, one elsewhere.
        let relay = |&(i, j): &(usize, usize)| {
            Some(match j {
                0 => i % 3,
                1 => (i + 1) % 3,
                _ => 3 + i % 6,
            })
        };
        let store = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let fetchable = &store[..6];
        for offset in 0..12 {
            let plan = plan(&instances(&[3; 12]), fetchable, &store, 20, offset, relay);
            let totals = slot_totals(&plan, fetchable, 12);
            assert!(totals.iter().all(|&t| t > 0), "offset {offset}: {totals:?}");
            let (min, max) = (totals.iter().min().unwrap(), totals.iter().max().unwrap());
            assert!(max - min <= 2, "offset {offset}: {totals:?}");
        }
    }

    #[test]
    fn an_instance_left_short_in_one_descriptor_catches_up_in_the_next() {
        // Six instances of three intro points on nine relays, most relays
        // shared by two or three instances (as on a small network, where
        // bandwidth-weighted choice crowds them): relay of each point.
        const RELAYS: [[usize; 3]; 6] = [
            [6, 2, 3],
            [8, 6, 1],
            [7, 4, 6],
            [4, 0, 1],
            [0, 8, 5],
            [0, 1, 5],
        ];
        let relay = |&(i, j): &(usize, usize)| Some(RELAYS[i][j]);
        let store = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let fetchable = &store[..6];
        for offset in 0..6 {
            let plan = plan(&instances(&[3; 6]), fetchable, &store, 20, offset, relay);
            let totals = slot_totals(&plan, fetchable, 6);
            // Instance 0 alone has relays 2 and 3, so it also fills what
            // nobody else can; the others get 8 or 9 of the 54 slots each.
            // (Dealt round by round, instance 2 had 6 and instance 0 18.)
            assert!(
                totals[1..].iter().all(|&t| (8..=9).contains(&t)),
                "offset {offset}: {totals:?}"
            );
            assert!(totals[0] <= 13, "offset {offset}: {totals:?}");
        }
    }

    #[test]
    fn few_intro_points_share_one_descriptor() {
        let store = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let plan = plan(&instances(&[3, 3, 3]), &store[..6], &store, 20, 0, no_relay);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].intro_points.len(), 9);
        assert_eq!(plan[0].hsdirs, store);
    }

    #[test]
    fn distinct_descriptors_give_equal_shares() {
        let store = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let fetchable = &store[..6];
        for n in [7usize, 12, 40, 60, 120] {
            let plan = plan(&instances(&vec![3; n]), fetchable, &store, 20, 5, no_relay);
            assert_eq!(plan.len(), 6, "{n} instances");
            assert!(plan.iter().all(|d| d.intro_points.len() == 20));
            // Every HSDir gets exactly one descriptor.
            let mut all: Vec<u8> = plan.iter().flat_map(|d| d.hsdirs.clone()).collect();
            all.sort();
            assert_eq!(all, store);
            // Shares differ by at most one slot in 120.
            let totals = slot_totals(&plan, fetchable, n);
            let (min, max) = (totals.iter().min().unwrap(), totals.iter().max().unwrap());
            assert!(max - min <= 1, "{n} instances: {totals:?}");
            assert_eq!(totals.iter().sum::<usize>(), 120);
            // The descriptors differ from each other.
            assert!(plan
                .windows(2)
                .any(|w| w[0].intro_points != w[1].intro_points));
        }
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
