//! Kitchen simulator: how good are the box's ready-time promises?
//!
//! Plays seeded, deterministic lunch services through the box's own predictor
//! (`edge_node::core::kitchen`, the code the box runs) and two baselines, and prints
//! the error of promised against actual ready times.
//!
//! ```text
//! cargo bench -p edge-node --bench kitchensim [-- --services 20 --seed 1]
//! ```
//!
//! A service, second by second, 11:00 until every order is handed out:
//! - orders arrive at random (Poisson), at 0.6 a minute growing to a peak of 4.2 a
//!   minute at 12:00 (a bell of 15 minutes' spread), closing at 13:30;
//! - each order has one dish (70 %) or two from different stations: noodles (5 cooks,
//!   2.5 min mean, ±35 %), rice (3 cooks, 1.5 min, ±30 %), grill (2 cooks, 2 min,
//!   ±40 %), preparation times log-normal: at the peak, noodles and grill take more
//!   than they make for a quarter of an hour, so queues build;
//! - paid by campus card within 30 s of placing; each station cooks its part of the
//!   orders first paid, first served; an order is done when its last part is;
//! - **mid-service the noodle station slows down**: from 12:10 to 12:40 two of its
//!   five cooks are away;
//! - **staff bump in bursts**: they look at the pass every 30 to 120 s, then mark
//!   everything started since their last look as preparing and everything done as
//!   ready; the ready bump is the actual ready time (what the student sees).
//!
//! Predictors, each asked once, as the order is placed:
//! - `kitchen`: the box's predictor, fed the same events the box sees (placed, paid,
//!   the bumps);
//! - `fixed quote`: placed + one constant, the median actual wait of the service
//!   (chosen with hindsight: the best constant there is);
//! - `10 min quote`: placed + 10 minutes, a round number a manager might set;
//! - `queue × prep`: placed + (paid orders not yet ready + 1) × the mean start → ready
//!   bump time measured so far (5 min before the first);
//! - `sees the cooks`: a reference no box has: it knows every cook's state and each
//!   station's queue, assumes mean preparation times from there and adds the mean waits
//!   for payment and the ready bump. What is left is the dice: how far a promise made
//!   at placement can get.
//!
//! `--by-period` adds, per service, the kitchen's mean signed error and MAE before the
//! rush, in it, during the slowdown and after.

use chrono::{DateTime, Duration, TimeZone, Utc};
use edge_node::core::kitchen::{Kitchen, Tuning};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STATIONS: [(&str, usize, f64, f64, f64); 3] = [
    // name, cooks, mean minutes, spread (coefficient of variation), share of dishes
    ("noodles", 5, 2.5, 0.35, 0.45),
    ("rice", 3, 1.5, 0.30, 0.35),
    ("grill", 2, 2.0, 0.40, 0.20),
];
const OPEN_S: i64 = 0; // 11:00
const CLOSE_S: i64 = 150 * 60; // 13:30
const PEAK_S: f64 = 60.0 * 60.0; // 12:00
const SLOW_FROM_S: i64 = 70 * 60; // 12:10
const SLOW_TO_S: i64 = 100 * 60; // 12:40

struct Order {
    placed: i64,
    paid: i64,
    parts: Vec<usize>,
    parts_left: usize,
    started: Option<i64>,
    start_bumped: bool,
    done: Option<i64>,
    ready_bumped: Option<i64>,
    promise_kitchen: i64,
    promise_queue: i64,
    promise_oracle: i64,
}

#[derive(Clone, Copy)]
struct Cook {
    busy_until: Option<(i64, usize)>,
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn lognormal_s(rng: &mut StdRng, mean_min: f64, cv: f64) -> i64 {
    let sigma2 = (1.0 + cv * cv).ln();
    let mu = (mean_min * 60.0).ln() - sigma2 / 2.0;
    (mu + sigma2.sqrt() * normal(rng)).exp().round().max(20.0) as i64
}

fn arrivals_per_s(t: i64) -> f64 {
    let x = (t as f64 - PEAK_S) / (15.0 * 60.0);
    (0.6 + 3.6 * (-x * x / 2.0).exp()) / 60.0
}

fn pick_station(rng: &mut StdRng, not: Option<usize>) -> usize {
    loop {
        let mut r: f64 = rng.random();
        for (i, s) in STATIONS.iter().enumerate() {
            if r < s.4 {
                if Some(i) != not {
                    return i;
                }
                break;
            }
            r -= s.4;
        }
    }
}

fn at(base: DateTime<Utc>, s: i64) -> DateTime<Utc> {
    base + Duration::seconds(s)
}

/// One service; returns (placed, actual, promise) per predictor: kitchen, queue × prep.
fn service(seed: u64) -> Vec<Order> {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = Utc.with_ymd_and_hms(2026, 12, 7, 3, 0, 0).unwrap();
    let mut kitchen = Kitchen::new(Tuning::default());
    let mut orders: Vec<Order> = Vec::new();
    let mut ids = Vec::new();
    let mut queues: Vec<std::collections::VecDeque<usize>> = vec![Default::default(); 3];
    let mut cooks: Vec<Vec<Cook>> = STATIONS
        .iter()
        .map(|s| vec![Cook { busy_until: None }; s.1])
        .collect();
    let mut next_look = rng.random_range(30..=120);
    let (mut prep_sum, mut prep_n) = (0.0f64, 0u32);
    let mut t = OPEN_S;
    loop {
        // Arrivals.
        if t < CLOSE_S && rng.random::<f64>() < arrivals_per_s(t) {
            let first = pick_station(&mut rng, None);
            let mut parts = vec![first];
            if rng.random::<f64>() < 0.3 {
                parts.push(pick_station(&mut rng, Some(first)));
            }
            let names: Vec<String> = parts.iter().map(|&p| STATIONS[p].0.to_owned()).collect();
            let id = canteen_api::ids::OrderId::new();
            let promise = kitchen.estimate_new(&names, at(base, t));
            kitchen.placed(id, at(base, t), &names, Some(promise));
            let in_kitchen = orders
                .iter()
                .filter(|o| o.paid <= t && o.ready_bumped.is_none())
                .count();
            let avg_prep = if prep_n == 0 {
                300.0
            } else {
                prep_sum / f64::from(prep_n)
            };
            // The reference: knows every cook's state and the queues, assumes mean
            // preparation times from here on, and adds the mean waits for payment (15 s)
            // and the ready bump (about 45 s).
            let oracle = parts
                .iter()
                .map(|&p| {
                    let mut free: Vec<i64> = cooks[p]
                        .iter()
                        .map(|c| c.busy_until.map_or(t, |(u, _)| u.max(t)))
                        .collect();
                    let mean = (STATIONS[p].2 * 60.0) as i64;
                    let mut finish = t;
                    for _ in 0..=queues[p].len() {
                        let c = (0..free.len()).min_by_key(|&c| free[c]).unwrap_or(0);
                        free[c] += mean;
                        finish = free[c];
                    }
                    finish
                })
                .max()
                .unwrap_or(t)
                + 15
                + 45;
            orders.push(Order {
                placed: t,
                paid: t + rng.random_range(1..=30),
                parts_left: parts.len(),
                parts,
                started: None,
                start_bumped: false,
                done: None,
                ready_bumped: None,
                promise_kitchen: (promise - base).num_seconds(),
                promise_queue: t + ((in_kitchen as f64 + 1.0) * avg_prep) as i64,
                promise_oracle: oracle,
            });
            ids.push(id);
        }
        // Payments join the stations' queues.
        for (i, o) in orders.iter().enumerate() {
            if o.paid == t {
                kitchen.paid(ids[i], at(base, t));
                for &p in &o.parts {
                    queues[p].push_back(i);
                }
            }
        }
        // Cooks finish and take the next part.
        for (s, station) in cooks.iter_mut().enumerate() {
            let away = s == 0 && (SLOW_FROM_S..SLOW_TO_S).contains(&t);
            let present = if away { 3 } else { station.len() };
            for (c, cook) in station.iter_mut().enumerate() {
                if let Some((until, o)) = cook.busy_until
                    && until <= t
                {
                    cook.busy_until = None;
                    orders[o].parts_left -= 1;
                    if orders[o].parts_left == 0 {
                        orders[o].done = Some(t);
                    }
                }
                if cook.busy_until.is_none()
                    && c < present
                    && let Some(o) = queues[s].pop_front()
                {
                    let (_, _, mean, cv, _) = STATIONS[s];
                    cook.busy_until = Some((t + lognormal_s(&mut rng, mean, cv), o));
                    orders[o].started.get_or_insert(t);
                }
            }
        }
        // Staff look at the pass now and then, and bump what they see.
        if t >= next_look {
            for (i, o) in orders.iter_mut().enumerate() {
                if o.ready_bumped.is_some() {
                    continue;
                }
                if o.started.is_some() && !o.start_bumped {
                    o.start_bumped = true;
                    kitchen.started(ids[i], at(base, t));
                }
                if o.done.is_some() {
                    o.ready_bumped = Some(t);
                    kitchen.ready(ids[i], at(base, t));
                }
            }
            // What the queue × prep baseline measures: start bump → ready bump.
            (prep_sum, prep_n) = orders
                .iter()
                .filter_map(|o| Some((o.ready_bumped?, o.started?)))
                .fold((0.0, 0), |(sum, n), (r, s)| (sum + (r - s) as f64, n + 1));
            next_look = t + rng.random_range(30..=120);
        }
        t += 1;
        if t > CLOSE_S && orders.iter().all(|o| o.ready_bumped.is_some()) {
            break;
        }
    }
    orders
}

struct Score {
    mae_min: f64,
    p90_min: f64,
    within_2: f64,
}

fn score(errors: &mut [f64]) -> Score {
    errors.iter_mut().for_each(|e| *e = e.abs() / 60.0);
    errors.sort_by(f64::total_cmp);
    let n = errors.len().max(1) as f64;
    Score {
        mae_min: errors.iter().sum::<f64>() / n,
        p90_min: errors[((errors.len() as f64 * 0.9) as usize).min(errors.len() - 1)],
        within_2: errors.iter().filter(|e| **e <= 2.0).count() as f64 / n,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut services, mut seed, mut by_period) = (20u64, 1u64, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--services" => services = args.next().and_then(|v| v.parse().ok()).unwrap_or(20),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--by-period" => by_period = true,
            _ => {} // cargo bench passes --bench
        }
    }
    let (mut kitchen, mut fixed, mut queue) = (Vec::new(), Vec::new(), Vec::new());
    let mut oracle = Vec::new();
    let mut ten = Vec::new();
    let mut waits_all = Vec::new();
    for s in 0..services {
        let orders = service(seed + s);
        let mut waits: Vec<i64> = orders
            .iter()
            .map(|o| o.ready_bumped.unwrap_or(o.placed) - o.placed)
            .collect();
        waits.sort_unstable();
        let quote = waits[waits.len() / 2];
        for o in &orders {
            let actual = o.ready_bumped.unwrap_or(o.placed);
            kitchen.push((o.promise_kitchen - actual) as f64);
            fixed.push((o.placed + quote - actual) as f64);
            ten.push((o.placed + 600 - actual) as f64);
            queue.push((o.promise_queue - actual) as f64);
            oracle.push((o.promise_oracle - actual) as f64);
        }
        waits_all.extend(waits);
        if by_period {
            for (from, to) in [(0, 50), (50, 70), (70, 100), (100, 150)] {
                let part: Vec<&Order> = orders
                    .iter()
                    .filter(|o| (from * 60..to * 60).contains(&o.placed))
                    .collect();
                let n = part.len().max(1) as f64;
                let err = |f: &dyn Fn(&Order) -> i64| -> (f64, f64) {
                    let e: Vec<f64> = part
                        .iter()
                        .map(|o| (f(o) - o.ready_bumped.unwrap_or(o.placed)) as f64 / 60.0)
                        .collect();
                    (
                        e.iter().sum::<f64>() / n,
                        e.iter().map(|x| x.abs()).sum::<f64>() / n,
                    )
                };
                let (bias, mae) = err(&|o| o.promise_kitchen);
                let (_, reference) = err(&|o| o.promise_oracle);
                println!(
                    "service {} 11:00+{from}..{to} min: {} orders; kitchen promise minus actual {bias:+.2} min on average, MAE {mae:.2} min (sees the cooks: {reference:.2})",
                    seed + s,
                    part.len(),
                );
            }
        }
    }
    waits_all.sort_unstable();
    println!(
        "{services} services (seeds {seed}..{}), {} orders; actual wait median {:.1} min, p90 {:.1} min",
        seed + services - 1,
        kitchen.len(),
        waits_all[waits_all.len() / 2] as f64 / 60.0,
        waits_all[waits_all.len() * 9 / 10] as f64 / 60.0
    );
    println!(
        "{:<15} {:>9} {:>9} {:>12}",
        "predictor", "MAE min", "p90 min", "within 2 min"
    );
    let rows = [
        ("kitchen", score(&mut kitchen)),
        ("fixed quote", score(&mut fixed)),
        ("10 min quote", score(&mut ten)),
        ("queue × prep", score(&mut queue)),
        ("sees the cooks", score(&mut oracle)),
    ];
    for (name, s) in &rows {
        println!(
            "{name:<15} {:>9.2} {:>9.2} {:>11.0}%",
            s.mae_min,
            s.p90_min,
            s.within_2 * 100.0
        );
    }
    println!(
        "kitchen vs fixed quote: {:.1}× as accurate (MAE)",
        rows[1].1.mae_min / rows[0].1.mae_min
    );
}
