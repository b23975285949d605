//! Ready-time predictions from the live kitchen. Pure: no clock, no I/O; the box feeds
//! it the order events it commits (placed, paid, started, ready, gone) with their times
//! and asks it what to promise.
//!
//! A **station** is a menu category (the noodle counter, the rice counter): an order
//! needs every station its lines come from and is ready when the last of them is done.
//! Per station the kitchen measures, from the staff's bumps:
//!
//! - its **rate**: orders finished per second *while it had a backlog* (an order paid
//!   and not yet started). Time without a backlog is not counted, so a quiet hour does
//!   not read as a slow kitchen, and the count is over time rather than between bumps,
//!   so staff bumping five orders at once after three quiet minutes reads the same as
//!   five bumps spread over those minutes. Counts and time decay exponentially (a
//!   memory of about 10 minutes), so a station that slows down mid-service is seen
//!   within minutes. Until backlog time fills that memory a prior counts too: as many
//!   orders at once as were last seen in preparation together, each taking the
//!   preparation time;
//! - its **lead time**: payment → ready bump of orders that found no queue, which is
//!   what a dish takes plus what the bumps add (a cook picking it up, the ready bump
//!   coming at the next look at the pass);
//! - its **start lag**: payment → start bump of those orders;
//! - its **preparation time**: start bump → ready bump, clipped to a quarter..four
//!   times the current value so one forgotten bump does not swing it.
//!
//! All start from `prep_prior_s` and a minute of start lag; the first observations of
//! the day replace the prior quickly (a running mean, settling to exponential weights).
//! Only single-station orders teach lead and preparation times: an order from two
//! stations is ready when the slower is, which says nothing about the faster one.
//!
//! A station **has a queue** when an order has waited to start longer than its start
//! lag, or more than twice as many orders wait as it was seen working on at once; orders that staff have
//! simply not bumped yet are not a queue. An order at a station with a queue and
//! `ahead` unstarted orders before it is predicted ready `ahead / rate + lead` after
//! now; without a queue, `lead`; once started, after what is left of the preparation
//! time. The order's estimate is the latest of its stations, and never sooner than
//! `floor_s` from now: a late order's estimate moves on with the clock instead of
//! sitting in the past.
//!
//! How good this is: `cargo bench -p edge-node --bench kitchensim` (BENCHMARKS.md).

use canteen_api::ids::OrderId;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;

/// The kitchen's collections are persistent (structure-sharing) ones: cloning a whole
/// kitchen is a few pointer copies, so the box copies it to work out every order's
/// estimate or to write its snapshot without holding up the writer, and a growing
/// map never rehashes all at once in the middle of a commit.
type Tickets = imbl::HashMap<OrderId, Ticket>;
type Queue = imbl::OrdSet<(DateTime<Utc>, OrderId)>;

/// Orders the kitchen tracks at once, at most (a day's open orders are far fewer).
pub const TICKETS_MAX: usize = 50_000;
/// Stations tracked, at most (menu categories; more share the last one).
pub const STATIONS_MAX: usize = 64;

/// Seconds of backlog (decayed) before slot capacity follows the measured rate.
pub const MEASURED_S: f64 = 120.0;
/// Orders finished under backlog (today) before slot capacity follows the measured
/// rate: the first minutes of the day's first queue, before anything is ready, say
/// nothing yet.
pub const MEASURED_ORDERS: u32 = 5;

/// What the start lag is taken to be before any is measured, in seconds.
const START_LAG_PRIOR_S: f64 = 60.0;

/// The predictor's constants; [`Tuning::default`] is what the box runs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tuning {
    /// What one order takes at a station before anything is measured, in seconds.
    pub prep_prior_s: f64,
    /// How many seconds of evidence the prior counts as.
    pub prior_s: f64,
    /// Time constant of the rate's exponential memory, in seconds.
    pub memory_s: f64,
    /// Weight of a new preparation time in its moving average.
    pub prep_alpha: f64,
    /// An estimate is at least this far after now, in seconds.
    pub floor_s: f64,
    /// Weight of a new lead time in its moving average.
    pub lead_alpha: f64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            prep_prior_s: 300.0,
            prior_s: 90.0,
            memory_s: 600.0,
            prep_alpha: 0.2,
            floor_s: 30.0,
            lead_alpha: 0.15,
        }
    }
}

/// What a station (or the whole kitchen) has measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Rate {
    /// Orders finished with a backlog behind them, decayed.
    done: f64,
    /// Seconds with a backlog, decayed.
    busy: f64,
    /// Orders finished with a backlog behind them, all day.
    done_all_day: u32,
    /// Preparation seconds (start bump → ready bump).
    prep: Average,
    /// Started and not ready.
    working: usize,
    /// The most orders seen in preparation at once, decaying slowly back to one.
    peak: f64,
    /// There was a backlog over the last stretch of time: a completion now counts.
    loaded: bool,
    /// Lead time: seconds from payment to the ready bump, less the wait for the queue
    /// ahead that was predicted at payment. What one order takes when nothing is ahead
    /// of it, including what the bumps add (a cook starting, the ready bump coming at
    /// the next look at the pass). A moving average.
    lead: Average,
    /// Seconds from payment to the start bump for an order nothing was waiting ahead
    /// of: how long an order sits unstarted when the station is keeping up.
    start_lag: Average,
}

/// A moving average that starts as the mean of what it has seen (the prior counting as
/// one observation), so the first orders of the day replace the prior quickly, and
/// settles to exponential weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Average {
    value: Option<f64>,
    seen: u32,
}

impl Average {
    fn get(&self, prior: f64) -> f64 {
        self.value.unwrap_or(prior)
    }

    fn observe(&mut self, x: f64, prior: f64, alpha: f64) {
        self.seen = self.seen.saturating_add(1);
        let now = self.get(prior);
        let weight = alpha.max(1.0 / (f64::from(self.seen) + 1.0));
        self.value = Some(now + weight * (x - now));
    }
}

impl Rate {
    /// Moves the measurements `dt` seconds on, `waiting` orders having waited to start
    /// all along.
    fn decay(&mut self, dt: f64, memory: f64, waiting: usize) {
        let keep = (-dt / memory).exp();
        self.done *= keep;
        self.busy *= keep;
        self.loaded = waiting > 0;
        if self.loaded {
            self.busy += memory * (1.0 - keep);
        }
        let slow = (-dt / (3.0 * memory)).exp();
        self.peak = (1.0 + (self.peak - 1.0).max(0.0) * slow).max(self.working as f64);
    }

    /// A started order left.
    fn finish(&mut self) {
        self.working = self.working.saturating_sub(1);
    }

    fn start(&mut self) {
        self.working += 1;
        self.peak = self.peak.max(self.working as f64);
    }

    fn prep_s(&self, t: &Tuning) -> f64 {
        self.prep.get(t.prep_prior_s)
    }

    /// Orders per second, the prior (`prior_per_s`) blended with what was measured.
    fn per_second_with(&self, t: &Tuning, prior_per_s: f64) -> f64 {
        // The prior fades as backlog time fills the memory.
        let weight = t.prior_s * (1.0 - self.busy / t.memory_s).max(0.05);
        (self.done + weight * prior_per_s) / (self.busy + weight)
    }

    /// Orders per second: measured under backlog, with a prior of as many orders at
    /// once as were last seen in preparation together, each taking the preparation time.
    fn per_second(&self, t: &Tuning) -> f64 {
        self.per_second_with(t, self.peak.max(1.0) / self.prep_s(t))
    }

    fn observe_prep(&mut self, seconds: f64, t: &Tuning) {
        let now = self.prep_s(t);
        let seconds = seconds.clamp(now / 4.0, now * 4.0);
        self.prep.observe(seconds, t.prep_prior_s, t.prep_alpha);
    }

    fn lag_s(&self) -> f64 {
        self.start_lag.get(START_LAG_PRIOR_S)
    }

    fn lead_s(&self, t: &Tuning) -> f64 {
        self.lead.get(t.prep_prior_s)
    }

    /// Seconds an order `ahead` places back waits for a cook: the orders ahead beyond
    /// what the station works on at once, at its rate.
    fn queue_wait(&self, t: &Tuning, ahead: usize) -> f64 {
        ahead as f64 / self.per_second(t)
    }

    /// Seconds from now until an order is ready: `since_paid` seconds after it was
    /// paid (0 for one not paid yet: as if paid now), with `ahead` orders before it in
    /// the queue, `elapsed` seconds after it was started if it was: the queue's wait
    /// plus a lead time, counted from payment for as long as a start usually lags, and
    /// from now once it has waited longer (its start is overdue).
    fn remaining(&self, t: &Tuning, since_paid: f64, ahead: usize, elapsed: Option<f64>) -> f64 {
        match elapsed {
            Some(e) => (self.prep_s(t) - e).max(0.0),
            None => {
                let lead = self.lead_s(t);
                let waited = since_paid.min(self.lag_s());
                (lead - since_paid).max(self.queue_wait(t, ahead) + lead - waited)
            }
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Ticket {
    stations: Vec<usize>,
    /// When it was paid: from then on it is in the kitchen's queue.
    paid: Option<DateTime<Utc>>,
    started: Option<DateTime<Utc>>,
    promised: Option<DateTime<Utc>>,
    /// As it was paid, the station expected to finish last and the wait for the queue
    /// ahead there then predicted (seconds).
    expected: Option<(usize, f64)>,
}

/// The live kitchen: its open orders and what each station has measured. Serialisable
/// so the box can keep a snapshot of it (a restart then replays only what came after).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Kitchen {
    tuning: Tuning,
    at: Option<DateTime<Utc>>,
    tickets: Tickets,
    names: Vec<String>,
    stations: Vec<Rate>,
    all: Rate,
    /// Per station, the orders paid and not started (the backlog), in the order they
    /// were paid (the order the kitchen takes them), and the whole kitchen's.
    queues: Vec<Queue>,
    queue_all: Queue,
}

fn secs(d: Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn after(now: DateTime<Utc>, seconds: f64) -> DateTime<Utc> {
    // Bounded: a day at most, so the arithmetic cannot overflow.
    let ms = (seconds.clamp(0.0, 86_400.0) * 1000.0).round() as i64;
    now + Duration::milliseconds(ms)
}

impl Kitchen {
    pub fn new(tuning: Tuning) -> Self {
        Self {
            tuning,
            at: None,
            tickets: Tickets::new(),
            names: Vec::new(),
            stations: Vec::new(),
            all: Rate::default(),
            queues: Vec::new(),
            queue_all: Queue::new(),
        }
    }

    /// The constants it runs with.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// Orders tracked (placed or in the kitchen, not yet ready).
    pub fn open_orders(&self) -> usize {
        self.tickets.len()
    }

    /// Moves the measurements to `at` (events arrive in time order; an earlier time
    /// counts as the last one seen).
    fn advance(&mut self, at: DateTime<Utc>) {
        let dt = self.at.map_or(0.0, |last| secs(at - last).max(0.0));
        if dt > 0.0 {
            let memory = self.tuning.memory_s;
            for (r, q) in self.stations.iter_mut().zip(&self.queues) {
                r.decay(dt, memory, q.len());
            }
            self.all.decay(dt, memory, self.queue_all.len());
        }
        if self.at.is_none_or(|last| at > last) {
            self.at = Some(at);
        }
    }

    /// The station of a category already seen; once [`STATIONS_MAX`] are tracked, any
    /// other category shares the last one.
    fn station_of(&self, name: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|n| n == name)
            .or_else(|| (self.names.len() >= STATIONS_MAX).then_some(STATIONS_MAX - 1))
    }

    fn station(&mut self, name: &str) -> usize {
        if let Some(i) = self.station_of(name) {
            return i;
        }
        self.names.push(name.to_owned());
        self.stations.push(Rate::default());
        self.queues.push(Queue::new());
        self.names.len() - 1
    }

    fn each_rate(&mut self, stations: &[usize], f: impl Fn(&mut Rate)) {
        for &s in stations {
            f(&mut self.stations[s]);
        }
        f(&mut self.all);
    }

    /// An order was placed, needing `stations`; `promised` is what it was told.
    pub fn placed(
        &mut self,
        id: OrderId,
        at: DateTime<Utc>,
        stations: &[String],
        promised: Option<DateTime<Utc>>,
    ) {
        self.advance(at);
        if self.tickets.len() >= TICKETS_MAX || self.tickets.contains_key(&id) {
            return;
        }
        let mut idx: Vec<usize> = stations.iter().map(|s| self.station(s)).collect();
        idx.sort_unstable();
        idx.dedup();
        self.tickets.insert(
            id,
            Ticket {
                stations: idx,
                paid: None,
                started: None,
                promised,
                expected: None,
            },
        );
    }

    /// An order was paid: the kitchen will make it.
    pub fn paid(&mut self, id: OrderId, at: DateTime<Utc>) {
        self.advance(at);
        let Some(t) = self.tickets.get(&id) else {
            return;
        };
        if t.paid.is_some() {
            return;
        }
        let stations = t.stations.clone();
        let (backlog, _) = self.backlog(&self.saturated(at));
        let expected = stations
            .iter()
            .map(|&s| {
                let r = &self.stations[s];
                let wait = r.queue_wait(&self.tuning, backlog[s]);
                (s, wait, r.remaining(&self.tuning, 0.0, backlog[s], None))
            })
            .max_by(|a, b| a.2.total_cmp(&b.2))
            .map(|(s, wait, _)| (s, wait));
        if let Some(t) = self.tickets.get_mut(&id) {
            t.paid = Some(at);
            t.expected = expected;
        }
        for &s in &stations {
            self.queues[s].insert((at, id));
        }
        self.queue_all.insert((at, id));
    }

    /// Takes an order paid at `paid` out of the queues (it started, or left).
    fn dequeue(&mut self, id: OrderId, paid: DateTime<Utc>, stations: &[usize]) {
        for &s in stations {
            self.queues[s].remove(&(paid, id));
        }
        self.queue_all.remove(&(paid, id));
    }

    /// Staff started an order.
    pub fn started(&mut self, id: OrderId, at: DateTime<Utc>) {
        self.paid(id, at);
        let Some(t) = self.tickets.get_mut(&id) else {
            return;
        };
        let Some(paid) = t.paid.filter(|_| t.started.is_none()) else {
            return;
        };
        t.started = Some(at);
        let stations = t.stations.clone();
        let lag = match t.expected {
            Some((_, wait)) if wait <= 0.0 => Some(secs(at - paid).max(0.0)),
            _ => None,
        };
        self.each_rate(&stations, Rate::start);
        self.dequeue(id, paid, &stations);
        if let Some(lag) = lag {
            let alpha = self.tuning.lead_alpha;
            for &s in &stations {
                self.stations[s]
                    .start_lag
                    .observe(lag, START_LAG_PRIOR_S, alpha);
            }
            self.all.start_lag.observe(lag, START_LAG_PRIOR_S, alpha);
        }
    }

    /// Takes an order out of the kitchen, made or not; `None` unless it was paid.
    fn take_out(&mut self, id: OrderId, at: DateTime<Utc>) -> Option<Ticket> {
        self.advance(at);
        let t = self.tickets.remove(&id)?;
        let paid = t.paid?;
        if t.started.is_some() {
            self.each_rate(&t.stations, Rate::finish);
        } else {
            self.dequeue(id, paid, &t.stations);
        }
        Some(t)
    }

    /// Staff marked an order ready: a measurement.
    pub fn ready(&mut self, id: OrderId, at: DateTime<Utc>) {
        let Some(t) = self.take_out(id, at) else {
            return;
        };
        let tuning = self.tuning;
        let prep = t.started.map(|s| secs(at - s).max(0.0));
        let single = t.stations.len() == 1;
        for &s in &t.stations {
            let r = &mut self.stations[s];
            if r.loaded {
                r.done += 1.0;
                r.done_all_day = r.done_all_day.saturating_add(1);
            }
            // An order from several stations is ready when the slowest is: it tells
            // the others nothing about their own time.
            if let Some(p) = prep.filter(|_| single) {
                r.observe_prep(p, &tuning);
            }
        }
        if self.all.loaded {
            self.all.done += 1.0;
            self.all.done_all_day = self.all.done_all_day.saturating_add(1);
        }
        if let Some(p) = prep {
            self.all.observe_prep(p, &tuning);
        }
        if let (Some(paid), Some((s, wait))) = (t.paid, t.expected)
            && wait <= 0.0
        {
            let seen = secs(at - paid).clamp(0.0, 3600.0);
            if single {
                self.stations[s]
                    .lead
                    .observe(seen, tuning.prep_prior_s, tuning.lead_alpha);
            }
            // The whole kitchen's lead (for an order of dishes not chosen yet) takes
            // every order that found no queue.
            self.all
                .lead
                .observe(seen, tuning.prep_prior_s, tuning.lead_alpha);
        }
    }

    /// An order left the kitchen without being made (cancelled, expired).
    pub fn gone(&mut self, id: OrderId, at: DateTime<Utc>) {
        self.take_out(id, at);
    }

    /// Is the order tracked (placed or in the kitchen, not yet ready)?
    pub fn contains(&self, id: OrderId) -> bool {
        self.tickets.contains_key(&id)
    }

    /// Is the order paid and not yet ready: in the kitchen's hands?
    pub fn in_kitchen(&self, id: OrderId) -> bool {
        self.tickets.get(&id).is_some_and(|t| t.paid.is_some())
    }

    /// Forgets orders paid more than `after` ago and never started (an order nobody
    /// bumped): left in, it would read as a queue for the rest of the day.
    pub fn forget_stale(&mut self, now: DateTime<Utc>, after: Duration) {
        let stale: Vec<OrderId> = self
            .queue_all
            .iter()
            .take_while(|(paid, _)| now - *paid > after)
            .map(|(_, id)| *id)
            .collect();
        for id in stale {
            self.gone(id, now);
        }
    }

    /// What an order was promised when it was placed.
    pub fn promised(&self, id: OrderId) -> Option<DateTime<Utc>> {
        self.tickets.get(&id).and_then(|t| t.promised)
    }

    fn rates_at(&self, now: DateTime<Utc>) -> (Vec<Rate>, Rate) {
        let dt = self.at.map_or(0.0, |last| secs(now - last).max(0.0));
        let memory = self.tuning.memory_s;
        let mut stations = self.stations.clone();
        let mut all = self.all.clone();
        for (r, q) in stations.iter_mut().zip(&self.queues) {
            r.decay(dt, memory, q.len());
        }
        all.decay(dt, memory, self.queue_all.len());
        (stations, all)
    }

    fn finish(&self, now: DateTime<Utc>, seconds: f64) -> DateTime<Utc> {
        after(now, seconds.max(self.tuning.floor_s))
    }

    /// The backlog per station and in all: the orders paid and not started, at a
    /// station with a queue ([`Kitchen::saturated`]). Orders staff simply have not
    /// bumped yet are not a queue; once one waits too long, they all are.
    fn backlog(&self, saturated: &[bool]) -> (Vec<usize>, usize) {
        let per = saturated
            .iter()
            .zip(&self.queues)
            .map(|(&busy, q)| if busy { q.len() } else { 0 })
            .collect();
        let all = if saturated.iter().any(|s| *s) {
            self.queue_all.len()
        } else {
            0
        };
        (per, all)
    }

    /// Which stations have a queue: an order waiting to start for longer than their
    /// usual lag, or more than twice as many orders waiting as they work on at once.
    /// Constant work per station: the oldest waiting order is the first of its queue.
    fn saturated(&self, now: DateTime<Utc>) -> Vec<bool> {
        self.stations
            .iter()
            .zip(&self.queues)
            .map(|(r, q)| {
                let waited_long = q
                    .get_min()
                    .is_some_and(|(paid, _)| secs(now - *paid) > r.lag_s());
                waited_long || q.len() as f64 > 2.0 * r.peak.max(1.0)
            })
            .collect()
    }

    /// Seconds from now until ticket `t` is ready; `ahead(s)` is how many orders are
    /// before it in station `s`'s queue.
    fn ticket_seconds(
        &self,
        rates: &[Rate],
        t: &Ticket,
        now: DateTime<Utc>,
        ahead: impl Fn(usize) -> usize,
    ) -> f64 {
        t.stations
            .iter()
            .map(|&s| {
                let r = &rates[s];
                match (t.paid, t.started) {
                    (_, Some(started)) => {
                        r.remaining(&self.tuning, 0.0, 0, Some(secs(now - started).max(0.0)))
                    }
                    (Some(paid), None) => {
                        r.remaining(&self.tuning, secs(now - paid).max(0.0), ahead(s), None)
                    }
                    (None, None) => r.remaining(&self.tuning, 0.0, ahead(s), None),
                }
            })
            .fold(0.0, f64::max)
    }

    /// The current estimate of every order the kitchen tracks.
    pub fn estimates(&self, now: DateTime<Utc>) -> Vec<(OrderId, DateTime<Utc>)> {
        let (rates, _) = self.rates_at(now);
        let saturated = self.saturated(now);
        let (backlog, _) = self.backlog(&saturated);
        let mut queued: Vec<(&OrderId, &Ticket)> = self
            .tickets
            .iter()
            .filter(|(_, t)| t.paid.is_some())
            .collect();
        queued.sort_by_key(|(id, t)| (t.paid, **id));
        let mut ahead = vec![0usize; rates.len()];
        let mut out = Vec::with_capacity(self.tickets.len());
        for (id, t) in queued {
            let seconds = self.ticket_seconds(&rates, t, now, |s| ahead[s]);
            if t.started.is_none() {
                for &s in &t.stations {
                    if saturated[s] {
                        ahead[s] += 1;
                    }
                }
            }
            out.push((*id, self.finish(now, seconds)));
        }
        // An unpaid order's estimate ("if paid now") depends only on its stations, and
        // most unpaid orders share a few station sets: each set is worked out once.
        let mut if_paid_now: HashMap<&[usize], DateTime<Utc>> = HashMap::new();
        for (id, t) in self.tickets.iter().filter(|(_, t)| t.paid.is_none()) {
            let estimate =
                |t: &Ticket| self.finish(now, self.ticket_seconds(&rates, t, now, |s| backlog[s]));
            let estimate = if t.started.is_some() {
                estimate(t)
            } else {
                *if_paid_now
                    .entry(&t.stations)
                    .or_insert_with(|| estimate(t))
            };
            out.push((*id, estimate));
        }
        out
    }

    /// One order's current estimate: what [`Kitchen::estimates`] says of it, counting
    /// only the orders paid before it at its stations.
    pub fn estimate(&self, id: OrderId, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = self.tickets.get(&id)?;
        let (rates, _) = self.rates_at(now);
        let saturated = self.saturated(now);
        let seconds = self.ticket_seconds(&rates, t, now, |s| match (saturated[s], t.paid) {
            (false, _) => 0,
            (true, Some(paid)) => self.queues[s].range(..(paid, id)).count(),
            (true, None) => self.queues[s].len(),
        });
        Some(self.finish(now, seconds))
    }

    /// When an order needing `stations`, paid now, would be ready: the promise made at
    /// placement.
    pub fn estimate_new(&self, stations: &[String], now: DateTime<Utc>) -> DateTime<Utc> {
        let (rates, all) = self.rates_at(now);
        let (backlog, backlog_all) = self.backlog(&self.saturated(now));
        let worst = stations
            .iter()
            .map(|name| match self.station_of(name) {
                Some(s) => rates[s].remaining(&self.tuning, 0.0, backlog[s], None),
                // A station nothing was ordered from yet: the prior, alone.
                None => Rate::default().remaining(&self.tuning, 0.0, 0, None),
            })
            .fold(0.0, f64::max);
        let worst = if stations.is_empty() {
            all.remaining(&self.tuning, 0.0, backlog_all, None)
        } else {
            worst
        };
        self.finish(now, worst)
    }

    /// When an order of any dishes, paid now, would be ready (the whole kitchen as one
    /// station): what the students' page offers before a dish is chosen.
    pub fn estimate_any(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.estimate_new(&[], now)
    }

    /// How many orders the kitchen can make in a pickup slot of `length`: its rate
    /// measured under backlog over the slot, at most `ceiling` (the manager's setting).
    /// Before the kitchen has had a backlog for [`MEASURED_S`] (in its memory) and has
    /// finished [`MEASURED_ORDERS`] under one today, the slot takes `ceiling`: a quiet
    /// kitchen, or one whose first queue has only just formed, has not shown what it
    /// can do.
    pub fn slot_capacity(&self, length: Duration, ceiling: u32, now: DateTime<Utc>) -> u32 {
        let seconds = secs(length);
        if seconds <= 0.0 || ceiling == 0 {
            return 0;
        }
        let (_, all) = self.rates_at(now);
        if all.busy < MEASURED_S || all.done_all_day < MEASURED_ORDERS {
            return ceiling;
        }
        let can = (all.done / all.busy * seconds).floor();
        if can >= f64::from(ceiling) {
            ceiling
        } else {
            can.max(0.0) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-12-07T04:00:00Z".parse().unwrap()
    }

    fn min(m: f64) -> Duration {
        Duration::milliseconds((m * 60_000.0) as i64)
    }

    fn minutes_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
        secs(b - a) / 60.0
    }

    fn noodles() -> Vec<String> {
        vec!["noodles".to_owned()]
    }

    /// Places and pays `n` orders at `at`, returning their ids.
    fn queue(k: &mut Kitchen, n: usize, at: DateTime<Utc>, stations: &[String]) -> Vec<OrderId> {
        (0..n)
            .map(|_| {
                let id = OrderId::new();
                k.placed(id, at, stations, None);
                k.paid(id, at);
                id
            })
            .collect()
    }

    /// A station of cooks taking `prep` minutes an order, first come first served,
    /// staff bumping promptly.
    struct Station {
        cooks: Vec<DateTime<Utc>>,
        prep: f64,
        events: Vec<(DateTime<Utc>, u8, OrderId)>,
    }

    impl Station {
        fn new(cooks: usize, prep: f64, start: DateTime<Utc>) -> Self {
            Self {
                cooks: vec![start; cooks],
                prep,
                events: Vec::new(),
            }
        }

        /// An order arrives at `t`; returns when it will be ready.
        fn arrive(&mut self, t: DateTime<Utc>) -> (OrderId, DateTime<Utc>) {
            let id = OrderId::new();
            let c = (0..self.cooks.len())
                .min_by_key(|&c| self.cooks[c])
                .unwrap();
            let begin = self.cooks[c].max(t);
            self.cooks[c] = begin + min(self.prep);
            self.events.push((t, 0, id));
            self.events.push((begin, 1, id));
            self.events.push((begin + min(self.prep), 2, id));
            (id, begin + min(self.prep))
        }

        /// An order every `every` minutes from `start` for `for_min` minutes.
        fn steady(&mut self, start: DateTime<Utc>, every: f64, for_min: f64) -> DateTime<Utc> {
            let mut t = start;
            while t < start + min(for_min) {
                self.arrive(t);
                t += min(every);
            }
            start + min(for_min)
        }

        /// Feeds the kitchen what happened up to `until`.
        fn feed(&mut self, k: &mut Kitchen, until: DateTime<Utc>) {
            // At one instant: a cook finishes, an order arrives, a cook takes it.
            self.events
                .sort_by_key(|(at, kind, _)| (*at, (*kind + 1) % 3));
            let later = self
                .events
                .split_off(self.events.partition_point(|(at, _, _)| *at <= until));
            for (at, kind, id) in std::mem::replace(&mut self.events, later) {
                match kind {
                    0 => {
                        k.placed(id, at, &noodles(), None);
                        k.paid(id, at);
                    }
                    1 => k.started(id, at),
                    _ => k.ready(id, at),
                }
            }
        }
    }

    #[test]
    fn an_empty_kitchen_promises_the_preparation_time() {
        let k = Kitchen::new(Tuning::default());
        let at = k.estimate_new(&noodles(), t0());
        assert_eq!(minutes_between(t0(), at), 5.0);
        assert_eq!(k.estimate_any(t0()), at);
    }

    #[test]
    fn a_queue_ahead_adds_to_the_promise_and_each_order_sees_its_place() {
        let mut k = Kitchen::new(Tuning::default());
        let ids = queue(&mut k, 3, t0(), &noodles());
        let all: HashMap<_, _> = k.estimates(t0()).into_iter().collect();
        // Before anything is measured: one cook, 5 minutes an order.
        let first = minutes_between(t0(), all[&ids[0]]);
        let third = minutes_between(t0(), all[&ids[2]]);
        assert!(third > first + 8.0, "first {first}, third {third}");
        let next = minutes_between(t0(), k.estimate_new(&noodles(), t0()));
        assert!(
            next > third,
            "a new order goes behind the third: {next} vs {third}"
        );
        // Another station's queue does not delay a rice order.
        let rice = minutes_between(t0(), k.estimate_new(&["rice".to_owned()], t0()));
        assert_eq!(rice, 5.0);
    }

    #[test]
    fn a_steady_kitchen_is_measured_and_predicted_within_a_minute() {
        // Three cooks, 4 minutes an order, an order every 80 seconds: 0.9 load, so a
        // backlog now and then.
        let mut k = Kitchen::new(Tuning::default());
        let mut station = Station::new(3, 4.0, t0());
        let now = station.steady(t0(), 80.0 / 60.0, 60.0);
        // Now a rush: 12 orders at once.
        let rush: Vec<_> = (0..12).map(|_| station.arrive(now)).collect();
        station.feed(&mut k, now);
        let estimates: HashMap<_, _> = k.estimates(now).into_iter().collect();
        for (i, (id, truth)) in rush.iter().enumerate() {
            let off = minutes_between(*truth, estimates[id]);
            assert!(off.abs() <= 1.5, "order {i} of the rush: off by {off} min");
        }
    }

    #[test]
    fn one_order_s_estimate_is_what_the_whole_list_says_of_it() {
        let mut k = Kitchen::new(Tuning::default());
        let mut station = Station::new(2, 3.0, t0());
        let now = station.steady(t0(), 1.0, 30.0);
        let unpaid = OrderId::new();
        station.feed(&mut k, now);
        k.placed(unpaid, now, &noodles(), None);
        let all = k.estimates(now);
        assert!(all.len() > 3, "a queue to look at: {}", all.len());
        for (id, at) in all {
            assert_eq!(k.estimate(id, now), Some(at), "order {id}");
        }
        assert_eq!(k.estimate(OrderId::new(), now), None);
    }

    #[test]
    fn a_sudden_slowdown_moves_the_estimates_within_minutes() {
        let mut k = Kitchen::new(Tuning::default());
        // Two cooks at 3 minutes, an order a minute and a half: busy, no backlog.
        let mut station = Station::new(2, 3.0, t0());
        let now = station.steady(t0(), 1.5, 40.0);
        station.feed(&mut k, now);
        let (_, truth) = station.arrive(now);
        let before = k.estimate_new(&noodles(), now);
        let off = minutes_between(truth, before);
        assert!(off.abs() <= 2.0, "off by {off} min before the slowdown");
        // A cook leaves and the other slows to 4 minutes: the backlog grows. After a
        // quarter of an hour the estimate has moved at least half the way; after half
        // an hour it is within a fifth of the truth.
        station.cooks.truncate(1);
        station.prep = 4.0;
        let mut now = now;
        for (minutes, share) in [(15.0, 0.5), (15.0, 0.6)] {
            now = station.steady(now, 1.5, minutes);
            station.feed(&mut k, now);
            let (_, truth) = station.arrive(now);
            let estimate = minutes_between(now, k.estimate_new(&noodles(), now));
            let truth = minutes_between(now, truth);
            let was = minutes_between(now - min(minutes), before);
            assert!(
                estimate - was >= share * (truth - was),
                "after {minutes} more minutes: estimate {estimate} min, truth {truth} min"
            );
        }
    }

    #[test]
    fn bumping_in_bursts_reads_the_same_rate_as_bumping_one_by_one() {
        let mut smooth = Kitchen::new(Tuning::default());
        let mut bursty = Kitchen::new(Tuning::default());
        let ids = queue(&mut smooth, 30, t0(), &noodles());
        for &id in &ids {
            bursty.placed(id, t0(), &noodles(), None);
            bursty.paid(id, t0());
        }
        // Both finish 10 orders in 10 minutes, one at a time; the bursty staff start
        // five at once and bump them ready five at once.
        for (i, &id) in ids.iter().take(10).enumerate() {
            let done = t0() + min(1.0 + i as f64);
            smooth.started(id, done - min(1.0));
            smooth.ready(id, done);
        }
        for five in [0, 5] {
            let start = t0() + min(five as f64);
            for &id in &ids[five..five + 5] {
                bursty.started(id, start);
            }
            for &id in &ids[five..five + 5] {
                bursty.ready(id, start + min(5.0));
            }
        }
        let at = t0() + min(10.0);
        let a = minutes_between(at, smooth.estimate(ids[29], at).unwrap());
        let b = minutes_between(at, bursty.estimate(ids[29], at).unwrap());
        // The rate is the same; only the prior (how many orders were seen in
        // preparation at once) differs a little.
        assert!((a - b).abs() < 0.25 * a, "smooth {a} min, bursty {b} min");
    }

    #[test]
    fn a_station_that_stops_delays_only_its_own_orders_and_its_estimates_move_on() {
        let mut k = Kitchen::new(Tuning::default());
        let grill = vec!["grill".to_owned()];
        let stuck = queue(&mut k, 3, t0(), &grill);
        let first = k.estimate(stuck[0], t0()).unwrap();
        // The grill closes: nothing is started or bumped for 20 minutes.
        let later = t0() + min(20.0);
        let after = k.estimate(stuck[0], later).unwrap();
        assert!(after > first, "the estimate moved on");
        assert!(after >= later + Duration::seconds(30), "never in the past");
        // Noodles are not held up by the grill.
        let noodle = minutes_between(later, k.estimate_new(&noodles(), later));
        assert_eq!(noodle, 5.0);
        // An order needing both waits for the grill.
        let both = k.estimate_new(&["grill".to_owned(), "noodles".to_owned()], later);
        assert!(both > k.estimate_new(&grill, later) - Duration::seconds(1));
        assert!(minutes_between(later, both) > 10.0);
    }

    #[test]
    fn an_order_nobody_started_for_hours_stops_counting_as_a_queue() {
        let mut k = Kitchen::new(Tuning::default());
        let forgotten = queue(&mut k, 3, t0(), &noodles());
        let later = t0() + Duration::hours(3);
        assert!(k.estimate_new(&noodles(), later) > later + min(10.0));
        k.forget_stale(later, Duration::hours(2));
        assert_eq!(
            minutes_between(later, k.estimate_new(&noodles(), later)),
            5.0
        );
        assert!(!k.contains(forgotten[0]) && !k.in_kitchen(forgotten[0]));
    }

    #[test]
    fn orders_leaving_shorten_the_wait_behind_them() {
        let mut k = Kitchen::new(Tuning::default());
        let ids = queue(&mut k, 4, t0(), &noodles());
        let before = k.estimate(ids[3], t0()).unwrap();
        k.gone(ids[0], t0());
        k.gone(ids[1], t0());
        let after = k.estimate(ids[3], t0()).unwrap();
        assert!(minutes_between(after, before) >= 9.0);
        assert_eq!(k.estimate(ids[0], t0()), None);
        assert_eq!(k.open_orders(), 2);
    }

    #[test]
    fn slots_take_what_the_kitchen_makes_and_never_more_than_the_ceiling() {
        let mut k = Kitchen::new(Tuning::default());
        let slot = Duration::minutes(15);
        // Unmeasured: the manager's ceiling.
        assert_eq!(k.slot_capacity(slot, 40, t0()), 40);
        // A queue has formed and nothing is ready yet: not measured, still the ceiling.
        let mut now = t0();
        let ids = queue(&mut k, 60, now, &noodles());
        for &id in &ids[..3] {
            k.started(id, now);
        }
        now += min(4.0);
        assert_eq!(k.slot_capacity(slot, 40, now), 40);
        // Measured under load at one order a minute: about 15 in a quarter hour.
        for &id in &ids[..40] {
            k.started(id, now);
            now += min(1.0);
            k.ready(id, now);
        }
        let cap = k.slot_capacity(slot, 40, now);
        assert!((14..=17).contains(&cap), "capacity {cap}");
        // The ceiling still holds.
        assert_eq!(k.slot_capacity(slot, 10, now), 10);
        // The kitchen slows to one order every 3 minutes: the slot shrinks.
        for &id in &ids[40..] {
            k.started(id, now);
            now += min(3.0);
            k.ready(id, now);
        }
        let slower = k.slot_capacity(slot, 40, now);
        assert!(
            slower < cap && (4..=8).contains(&slower),
            "capacity {slower}"
        );
    }
}
