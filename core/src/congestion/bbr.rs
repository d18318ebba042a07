//! BBR version 3, as specified by the IETF CCWG Internet-Draft "BBR Congestion Control",
//! draft-ietf-ccwg-bbr-06 (6 July 2026), on the QUIC recovery events of RFC 9002.
//!
//! (The original design brief asked for "BBR v2"; the draft's current revision specifies
//! BBRv3, which is what this is. Section numbers below are those of draft-ietf-ccwg-bbr-06.
//! The draft renamed BBRv2's `inflight_hi`, `inflight_lo` and `bw_lo` to
//! `inflight_longterm`, `inflight_shortterm` and `bw_shortterm`; the code uses the new
//! names.)
//!
//! * Delivery-rate samples (section 4.1, formerly draft-cheng-iccrg-delivery-rate-estimation)
//!   are built inside the controller: every `on_packet_sent` records the connection's
//!   delivery state (`P.delivered`, `P.delivered_time`, `P.first_send_time`,
//!   `P.tx_in_flight`, `P.lost`, `P.is_app_limited`) in a deque ordered by send time, and an
//!   ACK looks up the record of its newest acknowledged packet by [`AckEvent::sent_time`].
//! * Startup (section 5.3.1) paces at `StartupPacingGain` = 4 ln 2 ≈ 2.77 with
//!   `cwnd_gain` 2, and exits on a bandwidth plateau (three non-application-limited rounds
//!   with less than 25% growth, section 5.3.1.2) or on high loss (section 5.3.1.3).
//! * Drain (section 5.3.2) paces at 0.5 until the estimated queue is gone (in flight at or
//!   below one BDP) or three rounds have passed.
//! * ProbeBW (section 5.3.3) cycles DOWN (pacing gain 0.9) → CRUISE (1.0) → REFILL (1.0,
//!   one round, short-term model reset) → UP (1.25, cwnd gain 2.25), with the bandwidth
//!   probe timed by `min(2..3 s, Reno-coexistence rounds)` (section 5.3.3.8) and the
//!   precautionary probing of section 5.3.3.6.
//! * The long-term bound `inflight_longterm` is cut when a round's loss rate exceeds
//!   `LossThresh` = 2% while probing (`max(tx_in_flight, Beta * target inflight)`,
//!   `Beta` = 0.7, section 5.5.10.2) and raised, slowly and then exponentially, while UP
//!   is limited by it (section 5.3.3.9). When not probing, a round with loss lowers the
//!   short-term bounds `bw_shortterm` and `inflight_shortterm` to
//!   `max(latest, Beta * bound)` (section 5.5.10.3).
//! * ProbeRTT (section 5.3.4) is entered when the ProbeRTT min-delay filter has not been
//!   refreshed for `ProbeRTTInterval` = 5 s; it holds the window at
//!   `max(0.5 * BDP, MinPipeCwnd)` for at least 200 ms and one round.
//! * `max_bw` is a windowed maximum over the current and previous ProbeBW cycles
//!   (sections 5.5.3 to 5.5.6); `min_rtt` a 10 s windowed minimum fed by the ProbeRTT
//!   filter (section 5.5.7, 5.3.4.3). Application-limited samples only ever raise
//!   `max_bw` (section 5.5.4).
//! * Pacing rate = `pacing_gain * bw * (1 - 1%)` (section 5.6.2), only allowed to fall
//!   once the pipe has been filled; window = `cwnd_gain * BDP + extra_acked`, bounded by
//!   the quantization budget and `MinPipeCwnd` = 4 packets (section 5.6.4), grown by at
//!   most the acknowledged bytes per ACK and capped by the model's bounds (sections
//!   5.6.4.6 and 5.6.4.7).
//!
//! Deviations from the draft, and why:
//! * **No packet numbers.** The trait carries none, so the per-packet state is looked up
//!   by send time: the record of the newest send at or before [`AckEvent::sent_time`]
//!   (or [`CongestionEvent::sent_time`]). Sends of the same instant share one record
//!   (section 4.1.3.1 recommends exactly that for GSO aggregates). Records are kept while
//!   they can still be acknowledged or declared lost (about two PTOs behind the newest
//!   acknowledged send; at most 2^18 records); an ACK or loss whose record is gone yields
//!   no rate sample, and a loss without record only counts as a loss in the round.
//! * **One ACK event is one ACK.** The draft runs its per-ACK steps once per ACK frame; an
//!   engine that reports each acknowledged packet separately (quinn) runs them once per
//!   packet, which is equivalent for the rate sample (it uses the newest packet).
//! * **Losses per batch.** `HandleLostPacket(P)` runs once per congestion event, with `P`
//!   the record of the event's newest lost packet and `RS.lost` counting all bytes lost
//!   since `P` was sent. Consecutive congestion events with the same `now` (an engine
//!   reporting one detection pass packet by packet, as s2n-quic does) are merged: the
//!   controller restores its state from before the first of them and applies the merged
//!   event, so per-packet and per-batch reporting give exactly the same reaction. A
//!   discard in the middle of a pass (s2n-quic's lost MTU probes) does not end it.
//! * **Startup high-loss exit** (section 5.3.1.3) needs "at least 6 discontiguous lost
//!   sequence ranges" in the round; without packet numbers the controller counts loss
//!   events instead (congestion events that declared bytes lost, one per loss-detection
//!   pass, saturating at 15), as Linux's BBRv3 counts ACKs that mark losses, and requires
//!   the round's loss rate (`RS.lost > LossThresh * RS.tx_in_flight`) and at least one full
//!   round in recovery as the draft does.
//! * **Application-limited marking** (section 4.1.2.4) comes from the engine: a send
//!   flagged `app_limited` runs `MarkConnectionAppLimited()`; an ACK flagged `app_limited`
//!   marks its rate sample application-limited as well (quinn only says so on ACK). The
//!   trait has no "application wrote data" event, so a send with nothing in flight after
//!   data has been delivered also marks the connection application-limited (the draft's
//!   check on the application's write would); after a probe timeout that declared
//!   everything lost this also happens, where the draft's `lost_out <= retrans_out`
//!   condition would not mark (the effect is only that the next round's samples cannot
//!   lower `max_bw`, and ProbeRTT is not entered on that ACK).
//! * **`C.is_cwnd_limited`** is derived from sends: a send that leaves less than two
//!   datagrams of window free marks the round as window-limited; the flag covers the
//!   current and the previous round. A paced engine rarely sends the window's last
//!   datagram before an ACK frees more (see `CWND_LIMITED_ROOM_PACKETS`).
//! * **RTT samples** are `now - sent_time` of the newest acknowledged packet (section 4.2),
//!   computed here rather than taken from the engine (quinn's adapter reports no latest
//!   sample). `C.min_rtt` for the rate-sample filter is the engine's minimum RTT.
//! * **Recovery episodes** follow RFC 9002: a loss of a packet sent after the current
//!   episode started opens a new one (`OnEnterFastRecovery`, section 5.6.4.4), and the
//!   first ACK of a packet sent after that start closes it (`RestoreCwnd`).
//!   Persistent congestion is treated as the draft's RTO (`OnEnterRTO`): the window
//!   falls to the bytes in flight plus one datagram, never below `MinPipeCwnd`.
//! * **ECN.** The draft specifies no ECN response (section 3.7) but requires CE marks to
//!   be treated as congestion: a CE event counts as a loss in the round (so the short-term
//!   bounds react at the round's end) and opens a recovery episode, but carries no lost
//!   bytes, so it never cuts `inflight_longterm`.
//! * **Spurious-loss undo** (sections 5.2.5, 5.5.11) is not implemented: the trait has
//!   no event for it. The undo state is still saved, as the draft's `SaveStateUponLoss()`
//!   requires.
//! * **Send quantum** (section 5.6.3) is computed and feeds the offload budget
//!   (section 5.5.8.2), but the trait cannot hand it to the engine.
//! * **Reno-coexistence rounds** (section 5.3.3.8): the draft's pseudo-code compares a
//!   round count with `TargetInflight()`, a volume; the text (and Linux) mean that volume
//!   in packets, so it is divided by the max datagram size.
//! * **The `max_bw` filter** keeps one maximum per ProbeBW cycle, for the current and the
//!   previous cycle (the draft's `cycle_count` "only needs to be tracked with a single
//!   bit"), rather than a general windowed max filter; `AdvanceMaxBwFilter()` drops the
//!   older slot and re-reads `max_bw` at once. `extra_acked` uses Kathleen Nichols'
//!   windowed max filter over rounds, as section 5.5.9 suggests.
//! * **The full-pipe estimator** (section 5.3.1.2) does not count a round whose first ACK
//!   carries no reliable rate sample (interval shorter than `C.min_rtt`, or no record) as
//!   a round without growth; the draft would compare a zero rate.
//! * **Where the draft disagrees with itself** the normative pseudo-code is followed:
//!   Appendix A.6 expects `inflight_longterm` to be cut on high loss in ProbeBW_UP
//!   "regardless of the application-limited state", but `HandleInflightTooHigh()`
//!   (section 5.5.10.2) only cuts it for samples that are not application-limited (the
//!   probe still ends).
//! * **Randomness** for the probe wait (section 5.3.3.8) comes from a SplitMix64 generator
//!   seeded per controller ([`Bbr::with_seed`] for reproducible runs).
//! * **The first RTT sample** re-runs `InitPacingRate()` (section 5.6.2 bases the initial
//!   rate on "the initial C.srtt after the first non-zero RTT sample").
//! * **ssthresh** is not part of BBR: [`CongestionMetrics::ssthresh`] is `None`.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{
    rfc9002_initial_window, AckEvent, CongestionController, CongestionControllerFactory,
    CongestionEvent, CongestionMetrics,
};

/// `BBR.StartupPacingGain` = 4 ln 2 (section 2.5).
const STARTUP_PACING_GAIN: f64 = 2.77;
/// `BBR.DrainPacingGain` (section 2.5).
const DRAIN_PACING_GAIN: f64 = 0.5;
/// `BBR.DefaultCwndGain` (section 2.6).
const DEFAULT_CWND_GAIN: f64 = 2.0;
/// ProbeBW_DOWN pacing gain (section 5.3.3.1).
const PROBE_DOWN_PACING_GAIN: f64 = 0.9;
/// ProbeBW_UP pacing gain (section 5.3.3.5).
const PROBE_UP_PACING_GAIN: f64 = 1.25;
/// ProbeBW_UP cwnd gain (section 5.3.3.5).
const PROBE_UP_CWND_GAIN: f64 = 2.25;
/// `BBR.ProbeRTTCwndGain` (section 2.16.2).
const PROBE_RTT_CWND_GAIN: f64 = 0.5;
/// `BBR.PacingMarginPercent` (section 2.5).
const PACING_MARGIN_PERCENT: f64 = 1.0;
/// `BBR.LossThresh` (section 2.8).
const LOSS_THRESH: f64 = 0.02;
/// `BBR.Beta` (section 2.8).
const BETA: f64 = 0.7;
/// `BBR.Headroom` (section 2.8).
const HEADROOM: f64 = 0.15;
/// `BBR.MinPipeCwnd`, in datagrams (section 2.8).
const MIN_PIPE_CWND_PACKETS: u64 = 4;
/// Full-pipe estimator: growth below this factor counts as a plateau (section 5.3.1.2).
const FULL_BW_GROWTH: f64 = 1.25;
/// Full-pipe estimator: rounds without growth (section 5.3.1.2).
const FULL_BW_COUNT: u32 = 3;
/// `BBRStartupFullLossCnt` (section 5.3.1.3).
const STARTUP_FULL_LOSS_COUNT: u64 = 6;
/// A send that leaves less than this many datagrams of the window free counts as
/// window-limited (`C.is_cwnd_limited`). Engines rarely fill a window to the last
/// datagram: quinn-proto stops with up to one datagram free, and a paced engine sends in
/// batches between pacing tokens and ACK arrivals; quinn connections in ProbeBW_UP were
/// traced sitting about two datagrams below the window (101 kB window, 98 kB in flight).
const CWND_LIMITED_ROOM_PACKETS: u64 = 2;
/// Where the count of loss events in a round saturates (Linux's 4-bit counter).
const STARTUP_LOSS_EVENTS_MAX: u64 = 15;
/// `BBR.ExtraAckedFilterLen`, rounds (section 2.12).
const EXTRA_ACKED_FILTER_LEN: u64 = 10;
/// `BBR.MinRTTFilterLen` (section 2.16.1).
const MIN_RTT_FILTER_LEN: Duration = Duration::from_secs(10);
/// `BBR.ProbeRTTDuration` (section 2.16.2).
const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
/// `BBR.ProbeRTTInterval` (section 2.16.2).
const PROBE_RTT_INTERVAL: Duration = Duration::from_secs(5);
/// Upper bound of the Reno-coexistence probe interval, rounds (section 5.3.3.8).
const RENO_ROUNDS_BOUND: u64 = 63;
/// Lower bound of the BBR-native probe interval (section 5.3.3.8).
const PROBE_WAIT_BASE: Duration = Duration::from_secs(2);
/// Send quantum bounds (section 5.6.3).
const SEND_QUANTUM_MAX: u64 = 64 * 1024;
/// At most this many send records are kept (see the module docs).
const MAX_RECORDS: usize = 1 << 18;
/// Records are kept at least this long behind the newest acknowledged send.
const MIN_RECORD_RETENTION: Duration = Duration::from_millis(10);

/// Builds [`Bbr`] controllers with the draft's parameters.
///
/// `BbrFactory::default()` seeds each controller's probe-timing randomness from the
/// process's random hasher keys; [`BbrFactory::with_seed`] makes the sequence of
/// controllers it builds reproducible.
#[derive(Debug, Default)]
pub struct BbrFactory {
    /// The base seed, if reproducible.
    seed: Option<u64>,
    /// Controllers built so far (mixed into the seed, so flows differ).
    built: AtomicU64,
}

impl BbrFactory {
    /// A factory whose `n`-th controller is seeded with a fixed function of `seed` and `n`:
    /// runs with the same events behave identically.
    pub fn with_seed(seed: u64) -> Self {
        BbrFactory {
            seed: Some(seed),
            built: AtomicU64::new(0),
        }
    }
}

impl CongestionControllerFactory for BbrFactory {
    fn name(&self) -> &str {
        "bbr"
    }

    fn build(&self, now: Instant, max_datagram_size: u16) -> Box<dyn CongestionController> {
        let n = self.built.fetch_add(1, Ordering::Relaxed);
        let seed = match self.seed {
            Some(seed) => seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            None => random_seed(),
        };
        Box::new(Bbr::with_seed(now, max_datagram_size, seed))
    }
}

/// A seed from the standard library's per-process random hasher keys.
fn random_seed() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014): a tiny, statistically sound generator; BBR needs only a few random
/// numbers per bandwidth probe.
#[derive(Debug, Clone, Copy)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The states of the BBR state machine (section 5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Startup,
    Drain,
    ProbeBwDown,
    ProbeBwCruise,
    ProbeBwRefill,
    ProbeBwUp,
    ProbeRtt,
}

impl State {
    /// `IsInAProbeBWState()`.
    fn is_probe_bw(self) -> bool {
        matches!(
            self,
            State::ProbeBwDown | State::ProbeBwCruise | State::ProbeBwRefill | State::ProbeBwUp
        )
    }

    /// `(pacing_gain, cwnd_gain)` of the state (table of section 5.6.1).
    fn gains(self) -> (f64, f64) {
        match self {
            State::Startup => (STARTUP_PACING_GAIN, DEFAULT_CWND_GAIN),
            State::Drain => (DRAIN_PACING_GAIN, DEFAULT_CWND_GAIN),
            State::ProbeBwDown => (PROBE_DOWN_PACING_GAIN, DEFAULT_CWND_GAIN),
            State::ProbeBwCruise | State::ProbeBwRefill => (1.0, DEFAULT_CWND_GAIN),
            State::ProbeBwUp => (PROBE_UP_PACING_GAIN, PROBE_UP_CWND_GAIN),
            State::ProbeRtt => (1.0, PROBE_RTT_CWND_GAIN),
        }
    }
}

/// `BBR.ack_phase` (section 2.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckPhase {
    Init,
    Refilling,
    ProbeStarting,
    ProbeFeedback,
    ProbeStopping,
}

/// Per-send delivery state (section 4.1.2.1.2), one per `on_packet_sent`.
#[derive(Debug, Clone, Copy)]
struct SendRecord {
    /// `P.send_time`.
    send_time: Instant,
    /// Bytes of this send.
    bytes: u64,
    /// `P.delivered`.
    delivered: u64,
    /// `P.delivered_time`.
    delivered_time: Instant,
    /// `P.first_send_time`.
    first_send_time: Instant,
    /// `P.is_app_limited`.
    app_limited: bool,
    /// `P.tx_in_flight`, including this send.
    tx_in_flight: u64,
    /// `P.lost`.
    lost: u64,
}

/// The per-ACK rate sample `RS` (sections 2.3 and 4.1.2.1.3).
#[derive(Debug, Clone, Copy, Default)]
struct RateSample {
    /// Whether the newest acknowledged packet's record was found (`RS.prior_time != 0`).
    has_record: bool,
    /// `RS.delivery_rate`, bytes per second; 0 when there is no reliable sample.
    delivery_rate: f64,
    /// `RS.is_app_limited`.
    is_app_limited: bool,
    /// `RS.delivered`.
    delivered: u64,
    /// `RS.prior_delivered`.
    prior_delivered: u64,
    /// `RS.newly_acked`.
    newly_acked: u64,
    /// `RS.tx_in_flight`.
    tx_in_flight: u64,
    /// `RS.lost`.
    lost: u64,
    /// `RS.rtt`.
    rtt: Option<Duration>,
}

/// A windowed running maximum (Kathleen Nichols' algorithm, as in Linux's
/// `lib/win_minmax.c`): the best, second-best and third-best samples of the window.
#[derive(Debug, Clone, Copy, Default)]
struct MaxFilter {
    /// `(time, value)`, best first.
    s: [(u64, u64); 3],
}

impl MaxFilter {
    /// Adds `value` at `time` with a window of `win` time units; returns the maximum.
    fn update(&mut self, win: u64, time: u64, value: u64) -> u64 {
        let sample = (time, value);
        if value >= self.s[0].1 || time.saturating_sub(self.s[2].0) > win {
            self.s = [sample; 3];
            return value;
        }
        if value >= self.s[1].1 {
            self.s[1] = sample;
            self.s[2] = sample;
        } else if value >= self.s[2].1 {
            self.s[2] = sample;
        }
        let dt = time.saturating_sub(self.s[0].0);
        if dt > win {
            self.s[0] = self.s[1];
            self.s[1] = self.s[2];
            self.s[2] = sample;
            if time.saturating_sub(self.s[0].0) > win {
                self.s[0] = self.s[1];
                self.s[1] = self.s[2];
            }
        } else if self.s[1].0 == self.s[0].0 && dt > win / 4 {
            self.s[1] = sample;
            self.s[2] = sample;
        } else if self.s[2].0 == self.s[1].0 && dt > win / 2 {
            self.s[2] = sample;
        }
        self.s[0].1
    }
}

/// Everything but the send records: small and `Copy`, so a loss batch can be replayed.
#[derive(Debug, Clone, Copy)]
struct Core {
    // --- Transport connection state (sections 2.2, 4.1.2.1.1) ---
    /// `C.SMSS`: the path's maximum UDP payload.
    smss: u64,
    /// `C.InitialCwnd`.
    initial_cwnd: u64,
    /// `C.inflight`, bytes, as tracked from the events.
    inflight: u64,
    /// `C.delivered`.
    delivered: u64,
    /// `C.delivered_time`.
    delivered_time: Instant,
    /// `C.first_send_time`.
    first_send_time: Instant,
    /// `C.app_limited`: the delivered count that ends the application-limited bubble, or
    /// 0 when not application-limited.
    app_limited: u64,
    /// `C.lost`.
    lost: u64,
    /// `C.min_rtt` (the engine's).
    conn_min_rtt: Option<Duration>,
    /// `C.srtt` (the engine's).
    srtt: Option<Duration>,
    /// The engine's RTT variance, for record retention.
    rttvar: Duration,
    /// `C.is_cwnd_limited` of the previous round.
    cwnd_limited_prev_round: bool,
    /// Whether the window limited a send in the current round.
    cwnd_limited_this_round: bool,
    /// RFC 9002 `congestion_recovery_start_time` of the current or last episode.
    recovery_start: Option<Instant>,
    /// Whether a loss-recovery episode is open.
    in_recovery: bool,
    /// `BBR.round_count` when the current recovery episode started.
    recovery_round: u64,

    // --- Output control parameters (section 2.4) ---
    /// `C.cwnd`.
    cwnd: u64,
    /// `C.pacing_rate`, bytes per second.
    pacing_rate: f64,
    /// `C.send_quantum`.
    send_quantum: u64,

    // --- General state (sections 2.5 to 2.7) ---
    /// `BBR.state`.
    state: State,
    /// `BBR.pacing_gain`.
    pacing_gain: f64,
    /// `BBR.cwnd_gain`.
    cwnd_gain: f64,
    /// `BBR.round_count`.
    round_count: u64,
    /// `BBR.round_start`.
    round_start: bool,
    /// `BBR.next_round_delivered`.
    next_round_delivered: u64,
    /// `BBR.idle_restart`.
    idle_restart: bool,
    /// `BBR.drain_start_round`.
    drain_start_round: u64,

    // --- Data rate model (sections 2.9.1, 2.11) ---
    /// `BBR.max_bw_filter`: maxima of the previous and the current ProbeBW cycle.
    max_bw_slots: [f64; 2],
    /// `BBR.max_bw`.
    max_bw: f64,
    /// `BBR.bw_shortterm` (infinite when unset).
    bw_shortterm: f64,
    /// `BBR.bw`.
    bw: f64,

    // --- Data volume model (sections 2.9.2, 2.12) ---
    /// `BBR.min_rtt`; `None` is infinite.
    min_rtt: Option<Duration>,
    /// `BBR.min_rtt_stamp`.
    min_rtt_stamp: Instant,
    /// `BBR.extra_acked_interval_start`.
    extra_acked_interval_start: Instant,
    /// `BBR.extra_acked_delivered`.
    extra_acked_delivered: u64,
    /// `BBR.extra_acked_filter`.
    extra_acked_filter: MaxFilter,
    /// `BBR.extra_acked`.
    extra_acked: u64,
    /// `BBR.offload_budget`.
    offload_budget: u64,
    /// `BBR.max_inflight`.
    max_inflight: u64,
    /// `BBR.inflight_longterm` (`u64::MAX` is infinite).
    inflight_longterm: u64,
    /// `BBR.inflight_shortterm` (`u64::MAX` is infinite).
    inflight_shortterm: u64,

    // --- Congestion signals (section 2.10, 5.5.10) ---
    /// `BBR.bw_latest`.
    bw_latest: f64,
    /// `BBR.inflight_latest`.
    inflight_latest: u64,
    /// `BBR.loss_round_delivered`.
    loss_round_delivered: u64,
    /// `BBR.loss_round_start`.
    loss_round_start: bool,
    /// `BBR.is_loss_in_round`.
    is_loss_in_round: bool,
    /// Loss events in the current loss round (Startup's high-loss exit): congestion
    /// events that declared datagrams lost, one per loss-detection pass. The draft counts
    /// "discontiguous sequence ranges lost"; the trait reports no packet numbers, so this
    /// counts what Linux's BBRv3 counts (`loss_events_in_round`: ACKs that mark losses),
    /// saturating at [`STARTUP_LOSS_EVENTS_MAX`] as Linux's 4-bit counter does.
    loss_events_in_round: u64,

    // --- Startup (section 2.13) ---
    /// `BBR.full_bw_reached`.
    full_bw_reached: bool,
    /// `BBR.full_bw_now`.
    full_bw_now: bool,
    /// `BBR.full_bw`.
    full_bw: f64,
    /// `BBR.full_bw_count`.
    full_bw_count: u32,

    // --- ProbeBW (section 2.14) ---
    /// `BBR.ack_phase`.
    ack_phase: AckPhase,
    /// `BBR.is_bw_probe_sample`.
    is_bw_probe_sample: bool,
    /// `BBR.bw_probe_up_acked`.
    bw_probe_up_acked: u64,
    /// `BBR.probe_up_acked_per_inc` (`u64::MAX` is infinite).
    probe_up_acked_per_inc: u64,
    /// `BBR.bw_probe_up_rounds`.
    bw_probe_up_rounds: u32,
    /// `BBR.rounds_since_probe_up`.
    rounds_since_probe_up: u64,
    /// `BBR.bw_probe_wait`.
    bw_probe_wait: Duration,
    /// `BBR.cycle_stamp`.
    cycle_stamp: Instant,
    /// `BBR.prev_probe_too_high`.
    prev_probe_too_high: bool,
    /// `BBR.prev_probe_precautionary`.
    prev_probe_precautionary: bool,

    // --- Undo (section 2.15) ---
    /// `BBR.prior_cwnd`.
    prior_cwnd: u64,
    /// `BBR.undo_state`.
    undo_state: Option<State>,
    /// `BBR.undo_bw_shortterm`.
    undo_bw_shortterm: f64,
    /// `BBR.undo_inflight_shortterm`.
    undo_inflight_shortterm: u64,
    /// `BBR.undo_inflight_longterm`.
    undo_inflight_longterm: u64,

    // --- ProbeRTT (section 2.16) ---
    /// `BBR.probe_rtt_min_delay`; `None` is infinite.
    probe_rtt_min_delay: Option<Duration>,
    /// `BBR.probe_rtt_min_stamp`.
    probe_rtt_min_stamp: Instant,
    /// `BBR.probe_rtt_expired`.
    probe_rtt_expired: bool,
    /// `BBR.probe_rtt_done_stamp`; `None` is 0.
    probe_rtt_done_stamp: Option<Instant>,
    /// `BBR.probe_rtt_round_done`.
    probe_rtt_round_done: bool,

    /// Probe-timing randomness.
    rng: SplitMix64,
}

/// A congestion event being merged with the ones of the same detection pass.
#[derive(Debug, Clone, Copy)]
struct LossBatch {
    /// The merged event.
    event: CongestionEvent,
    /// The controller's state before the first event of the pass.
    before: Core,
}

/// The BBRv3 congestion controller of draft-ietf-ccwg-bbr-06 (see the module docs for
/// what it implements and where it deviates from the draft).
#[derive(Debug, Clone)]
pub struct Bbr {
    /// Everything but the send records.
    core: Core,
    /// Send records in send-time order.
    records: VecDeque<SendRecord>,
    /// The congestion events of the current detection pass, merged.
    loss_batch: Option<LossBatch>,
}

impl Bbr {
    /// A controller created at `now` for a path whose maximum UDP payload is
    /// `max_datagram_size`, in Startup with the RFC 9002 initial window, its probe timing
    /// seeded from the process's random hasher keys.
    pub fn new(now: Instant, max_datagram_size: u16) -> Self {
        Self::with_seed(now, max_datagram_size, random_seed())
    }

    /// As [`Bbr::new`], with the probe-timing randomness seeded by `seed`: two controllers
    /// with the same seed and the same events behave identically.
    pub fn with_seed(now: Instant, max_datagram_size: u16, seed: u64) -> Self {
        let smss = u64::from(max_datagram_size).max(1);
        let initial_cwnd = rfc9002_initial_window(smss);
        // OnInit() (section 5.2.1).
        let mut core = Core {
            smss,
            initial_cwnd,
            inflight: 0,
            delivered: 0,
            delivered_time: now,
            first_send_time: now,
            app_limited: 0,
            lost: 0,
            conn_min_rtt: None,
            srtt: None,
            rttvar: Duration::ZERO,
            cwnd_limited_prev_round: false,
            cwnd_limited_this_round: false,
            recovery_start: None,
            in_recovery: false,
            recovery_round: 0,
            cwnd: initial_cwnd,
            pacing_rate: 0.0,
            send_quantum: 2 * smss,
            state: State::Startup,
            pacing_gain: STARTUP_PACING_GAIN,
            cwnd_gain: DEFAULT_CWND_GAIN,
            round_count: 0,
            round_start: false,
            next_round_delivered: 0,
            idle_restart: false,
            drain_start_round: 0,
            max_bw_slots: [0.0; 2],
            max_bw: 0.0,
            bw_shortterm: f64::INFINITY,
            bw: 0.0,
            min_rtt: None,
            min_rtt_stamp: now,
            extra_acked_interval_start: now,
            extra_acked_delivered: 0,
            extra_acked_filter: MaxFilter::default(),
            extra_acked: 0,
            offload_budget: 0,
            max_inflight: 0,
            inflight_longterm: u64::MAX,
            inflight_shortterm: u64::MAX,
            bw_latest: 0.0,
            inflight_latest: 0,
            loss_round_delivered: 0,
            loss_round_start: false,
            is_loss_in_round: false,
            loss_events_in_round: 0,
            full_bw_reached: false,
            full_bw_now: false,
            full_bw: 0.0,
            full_bw_count: 0,
            ack_phase: AckPhase::Init,
            is_bw_probe_sample: false,
            bw_probe_up_acked: 0,
            probe_up_acked_per_inc: u64::MAX,
            bw_probe_up_rounds: 0,
            rounds_since_probe_up: 0,
            bw_probe_wait: Duration::ZERO,
            cycle_stamp: now,
            prev_probe_too_high: false,
            prev_probe_precautionary: false,
            prior_cwnd: 0,
            undo_state: None,
            undo_bw_shortterm: 0.0,
            undo_inflight_shortterm: 0,
            undo_inflight_longterm: 0,
            probe_rtt_min_delay: None,
            probe_rtt_min_stamp: now,
            probe_rtt_expired: false,
            probe_rtt_done_stamp: None,
            probe_rtt_round_done: false,
            rng: SplitMix64(seed),
        };
        core.init_pacing_rate();
        core.enter_startup();
        Bbr {
            core,
            records: VecDeque::new(),
            loss_batch: None,
        }
    }

    /// Ends the merging of congestion events: any other event ends a detection pass.
    fn end_loss_batch(&mut self) {
        self.loss_batch = None;
    }

    /// The record of the newest send at or before `sent_time`.
    fn record(&self, sent_time: Instant) -> Option<SendRecord> {
        let i = self.records.partition_point(|r| r.send_time <= sent_time);
        i.checked_sub(1).map(|i| self.records[i])
    }

    /// Drops records that can no longer be acknowledged or declared lost.
    fn prune_records(&mut self, newest_acked_sent: Instant, rtt: Duration) {
        let c = &self.core;
        let base = c.srtt.unwrap_or(rtt).max(rtt) + 4 * c.rttvar;
        let retention = (2 * base).max(MIN_RECORD_RETENTION);
        if let Some(cutoff) = newest_acked_sent.checked_sub(retention) {
            while self.records.front().is_some_and(|r| r.send_time < cutoff) {
                self.records.pop_front();
            }
        }
        while self.records.len() > MAX_RECORDS {
            self.records.pop_front();
        }
    }
}

impl Core {
    // ----- Helpers -----

    /// `BBR.MinPipeCwnd`.
    fn min_pipe_cwnd(&self) -> u64 {
        MIN_PIPE_CWND_PACKETS * self.smss
    }

    /// Sets the state and its gains.
    fn set_state(&mut self, state: State) {
        self.state = state;
        (self.pacing_gain, self.cwnd_gain) = state.gains();
    }

    /// `C.is_cwnd_limited`.
    fn is_cwnd_limited(&self) -> bool {
        self.cwnd_limited_prev_round || self.cwnd_limited_this_round
    }

    /// `BBR.bdp` for bandwidth `bw`, bytes; `None` before any RTT sample.
    fn bdp(&self, bw: f64) -> Option<f64> {
        self.min_rtt.map(|rtt| bw * rtt.as_secs_f64())
    }

    /// `BDPMultiple(bw, gain)` (sections 5.6.4.2, 5.6.4.5).
    fn bdp_multiple(&self, bw: f64, gain: f64) -> u64 {
        match self.bdp(bw) {
            None => self.initial_cwnd,
            Some(bdp) => (gain * bdp) as u64,
        }
    }

    /// `QuantizationBudget(inflight_cap)` (section 5.6.4.2), with the QUIC offload budget
    /// (section 5.5.8.2).
    fn quantization_budget(&mut self, inflight_cap: u64) -> u64 {
        self.offload_budget = self.send_quantum;
        let mut cap = inflight_cap
            .max(self.offload_budget)
            .max(self.min_pipe_cwnd());
        if self.state == State::ProbeBwUp {
            cap += 2 * self.smss;
        }
        cap
    }

    /// `Inflight(bw, gain)`.
    fn inflight(&mut self, bw: f64, gain: f64) -> u64 {
        let cap = self.bdp_multiple(bw, gain);
        self.quantization_budget(cap)
    }

    /// `TargetInflight()` = min(BBR.bdp, C.cwnd) (section 5.3.3.8).
    fn target_inflight(&self) -> u64 {
        match self.bdp(self.bw) {
            None => self.cwnd,
            Some(bdp) => (bdp as u64).min(self.cwnd),
        }
    }

    /// `InflightWithHeadroom()` (section 5.3.3.9).
    fn inflight_with_headroom(&self) -> u64 {
        if self.inflight_longterm == u64::MAX {
            return u64::MAX;
        }
        let headroom = ((HEADROOM * self.inflight_longterm as f64) as u64).max(self.smss);
        self.inflight_longterm
            .saturating_sub(headroom)
            .max(self.min_pipe_cwnd())
    }

    /// `MarkConnectionAppLimited()` (section 4.1.2.4).
    fn mark_app_limited(&mut self) {
        self.app_limited = (self.delivered + self.inflight).max(1);
    }

    // ----- Pacing (section 5.6.2) -----

    /// `InitPacingRate()`.
    fn init_pacing_rate(&mut self) {
        let srtt = self
            .srtt
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_millis(1));
        let nominal = self.initial_cwnd as f64 / srtt.as_secs_f64();
        self.pacing_rate = STARTUP_PACING_GAIN * nominal;
    }

    /// `SetPacingRateWithGain(gain)`.
    fn set_pacing_rate_with_gain(&mut self, gain: f64) {
        let rate = gain * self.bw * (100.0 - PACING_MARGIN_PERCENT) / 100.0;
        if self.full_bw_reached || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    /// `SetSendQuantum()` (section 5.6.3).
    fn set_send_quantum(&mut self) {
        let quantum = (self.pacing_rate * 0.001) as u64;
        self.send_quantum = quantum.min(SEND_QUANTUM_MAX).max(2 * self.smss);
    }

    // ----- State transitions -----

    /// `EnterStartup()` (section 5.3.1.1).
    fn enter_startup(&mut self) {
        self.set_state(State::Startup);
    }

    /// `EnterDrain()` (section 5.3.2).
    fn enter_drain(&mut self) {
        self.set_state(State::Drain);
        self.drain_start_round = self.round_count;
    }

    /// `EnterProbeBW()` (section 5.3.3.9).
    fn enter_probe_bw(&mut self, now: Instant) {
        self.cwnd_gain = DEFAULT_CWND_GAIN;
        self.start_probe_bw_down(now);
    }

    /// `StartRound()` (section 5.5.1).
    fn start_round(&mut self) {
        self.next_round_delivered = self.delivered;
    }

    /// `StartProbeBW_DOWN()`.
    fn start_probe_bw_down(&mut self, now: Instant) {
        self.reset_congestion_signals();
        self.probe_up_acked_per_inc = u64::MAX;
        self.pick_probe_wait();
        self.cycle_stamp = now;
        self.ack_phase = AckPhase::ProbeStopping;
        self.start_round();
        self.set_state(State::ProbeBwDown);
    }

    /// `StartProbeBW_CRUISE()`.
    fn start_probe_bw_cruise(&mut self) {
        self.set_state(State::ProbeBwCruise);
    }

    /// `StartProbeBW_REFILL()`.
    fn start_probe_bw_refill(&mut self) {
        self.reset_short_term_model();
        self.bw_probe_up_rounds = 0;
        self.bw_probe_up_acked = 0;
        self.prev_probe_precautionary = false;
        self.ack_phase = AckPhase::Refilling;
        self.start_round();
        self.set_state(State::ProbeBwRefill);
    }

    /// `StartProbeBW_UP()`.
    fn start_probe_bw_up(&mut self, rs: &RateSample) {
        self.ack_phase = AckPhase::ProbeStarting;
        self.start_round();
        self.reset_full_bw();
        self.full_bw = rs.delivery_rate;
        self.set_state(State::ProbeBwUp);
        self.raise_inflight_longterm_slope();
    }

    /// `PickProbeWait()` (section 5.3.3.8).
    fn pick_probe_wait(&mut self) {
        self.rounds_since_probe_up = self.rng.next_u64() & 1;
        self.bw_probe_wait = PROBE_WAIT_BASE + Duration::from_secs_f64(self.rng.next_f64());
    }

    /// `IsRenoCoexistenceProbeTime()`, with the target inflight in packets.
    fn is_reno_coexistence_probe_time(&self) -> bool {
        let reno_rounds = self.target_inflight() / self.smss;
        self.rounds_since_probe_up >= reno_rounds.min(RENO_ROUNDS_BOUND)
    }

    /// `IsTimeToProbeBW()`: starts REFILL and says so when it is time.
    fn is_time_to_probe_bw(&mut self, now: Instant) -> bool {
        let elapsed = now > self.cycle_stamp + self.bw_probe_wait;
        if elapsed || self.is_reno_coexistence_probe_time() {
            self.start_probe_bw_refill();
            return true;
        }
        false
    }

    /// `IsTimeToCruise()`.
    fn is_time_to_cruise(&mut self) -> bool {
        if self.inflight > self.inflight_with_headroom() {
            return false;
        }
        self.inflight <= self.inflight(self.max_bw, 1.0)
    }

    /// `IsTimeToGoDown()`.
    fn is_time_to_go_down(&mut self, rs: &RateSample) -> bool {
        if self.prev_probe_too_high && self.inflight >= self.inflight_longterm {
            self.prev_probe_precautionary = true;
            return true;
        }
        if self.is_cwnd_limited() && self.cwnd >= self.inflight_longterm {
            self.reset_full_bw();
            self.full_bw = rs.delivery_rate;
        } else if self.full_bw_now {
            return true;
        }
        false
    }

    /// `IsProbingBW()`.
    fn is_probing_bw(&self) -> bool {
        matches!(
            self.state,
            State::Startup | State::ProbeBwRefill | State::ProbeBwUp
        )
    }

    /// `RaiseInflightLongtermSlope()`.
    fn raise_inflight_longterm_slope(&mut self) {
        let growth_this_round = 1u64 << self.bw_probe_up_rounds;
        self.bw_probe_up_rounds = (self.bw_probe_up_rounds + 1).min(30);
        self.probe_up_acked_per_inc = (self.cwnd / growth_this_round).max(self.smss);
    }

    /// `ProbeInflightLongtermUpward()`.
    fn probe_inflight_longterm_upward(&mut self, rs: &RateSample) {
        if !self.is_cwnd_limited() || self.cwnd < self.inflight_longterm {
            return;
        }
        self.bw_probe_up_acked += rs.newly_acked;
        if self.bw_probe_up_acked >= self.probe_up_acked_per_inc {
            let delta = self.bw_probe_up_acked / self.probe_up_acked_per_inc;
            self.bw_probe_up_acked -= delta * self.probe_up_acked_per_inc;
            self.inflight_longterm = self.inflight_longterm.saturating_add(delta * self.smss);
        }
        if self.round_start {
            self.raise_inflight_longterm_slope();
        }
    }

    /// `AdaptLongTermModel()`: true if it decided a state transition.
    fn adapt_long_term_model(&mut self, rs: &RateSample) -> bool {
        if self.ack_phase == AckPhase::ProbeStarting && self.round_start {
            self.ack_phase = AckPhase::ProbeFeedback;
        }
        if self.ack_phase == AckPhase::ProbeStopping && self.round_start {
            self.is_bw_probe_sample = false;
            self.ack_phase = AckPhase::Init;
            if self.state.is_probe_bw() && !rs.is_app_limited {
                self.advance_max_bw_filter();
            }
            if self.state.is_probe_bw()
                && self.prev_probe_precautionary
                && !self.prev_probe_too_high
            {
                self.start_probe_bw_refill();
                return true;
            }
        }
        if !is_inflight_too_high(rs) {
            if self.inflight_longterm == u64::MAX {
                return false;
            }
            if rs.tx_in_flight > self.inflight_longterm {
                self.inflight_longterm = rs.tx_in_flight;
            }
            if self.state == State::ProbeBwUp {
                self.probe_inflight_longterm_upward(rs);
            }
        }
        false
    }

    /// `UpdateProbeBWCyclePhase()` (section 5.3.3.9).
    fn update_probe_bw_cycle_phase(&mut self, now: Instant, rs: &RateSample) {
        if !self.full_bw_reached {
            return;
        }
        if self.adapt_long_term_model(rs) {
            return;
        }
        let state = self.state;
        if state == State::ProbeBwDown {
            if !self.is_time_to_probe_bw(now) && self.is_time_to_cruise() {
                self.start_probe_bw_cruise();
            }
        } else if state == State::ProbeBwCruise {
            self.is_time_to_probe_bw(now);
        } else if state == State::ProbeBwRefill {
            // After one round of REFILL, start UP.
            if self.round_start {
                self.is_bw_probe_sample = true;
                self.start_probe_bw_up(rs);
            }
        } else if state == State::ProbeBwUp && self.is_time_to_go_down(rs) {
            self.prev_probe_too_high = false;
            self.start_probe_bw_down(now);
        }
    }

    // ----- Startup and Drain -----

    /// `ResetFullBW()`.
    fn reset_full_bw(&mut self) {
        self.full_bw = 0.0;
        self.full_bw_count = 0;
        self.full_bw_now = false;
    }

    /// `CheckFullBWReached()` (section 5.3.1.2). A round whose ACK carries no reliable rate
    /// sample is not counted as a plateau.
    fn check_full_bw_reached(&mut self, rs: &RateSample) {
        if self.full_bw_now || !self.round_start || rs.is_app_limited || rs.delivery_rate <= 0.0 {
            return;
        }
        if rs.delivery_rate >= self.full_bw * FULL_BW_GROWTH {
            self.reset_full_bw();
            self.full_bw = rs.delivery_rate;
            return;
        }
        self.full_bw_count += 1;
        self.full_bw_now = self.full_bw_count >= FULL_BW_COUNT;
        if self.full_bw_now {
            self.full_bw_reached = true;
        }
    }

    /// `CheckStartupHighLoss()` (section 5.3.1.3), counting loss events for ranges.
    fn check_startup_high_loss(&mut self, rs: &RateSample) {
        if !self.loss_round_start {
            return;
        }
        let loss_events = self.loss_events_in_round;
        self.loss_events_in_round = 0;
        if self.state == State::Startup
            && !self.full_bw_reached
            && self.in_recovery
            && self.round_count > self.recovery_round
            && loss_events >= STARTUP_FULL_LOSS_COUNT
            && is_inflight_too_high(rs)
        {
            self.undo_state = Some(State::Startup);
            self.full_bw_now = true;
            self.full_bw_reached = true;
            let bdp = self.bdp(self.bw).unwrap_or(0.0) as u64;
            self.inflight_longterm = bdp.max(self.inflight_latest);
        }
    }

    /// `CheckStartupDone()`.
    fn check_startup_done(&mut self, rs: &RateSample) {
        self.check_startup_high_loss(rs);
        if self.state == State::Startup && self.full_bw_reached {
            self.enter_drain();
        }
    }

    /// `CheckDrainDone()` (section 5.3.2).
    fn check_drain_done(&mut self, now: Instant) {
        if self.state == State::Drain
            && (self.inflight <= self.inflight(self.bw, 1.0)
                || self.round_count > self.drain_start_round + 3)
        {
            self.enter_probe_bw(now);
        }
    }

    // ----- ProbeRTT (section 5.3.4) -----

    /// `UpdateMinRTT()` (section 5.3.4.3).
    fn update_min_rtt(&mut self, now: Instant, rs: &RateSample) {
        self.probe_rtt_expired = now > self.probe_rtt_min_stamp + PROBE_RTT_INTERVAL;
        if let Some(rtt) = rs.rtt {
            if self.probe_rtt_min_delay.is_none_or(|d| rtt < d) || self.probe_rtt_expired {
                self.probe_rtt_min_delay = Some(rtt);
                self.probe_rtt_min_stamp = now;
            }
        }
        let min_rtt_expired = now > self.min_rtt_stamp + MIN_RTT_FILTER_LEN;
        if let Some(delay) = self.probe_rtt_min_delay {
            if self.min_rtt.is_none_or(|m| delay < m) || min_rtt_expired {
                self.min_rtt = Some(delay);
                self.min_rtt_stamp = self.probe_rtt_min_stamp;
            }
        }
    }

    /// `ProbeRTTCwnd()` (section 5.6.4.5).
    fn probe_rtt_cwnd(&self) -> u64 {
        self.bdp_multiple(self.bw, PROBE_RTT_CWND_GAIN)
            .max(self.min_pipe_cwnd())
    }

    /// `CheckProbeRTT()`.
    fn check_probe_rtt(&mut self, now: Instant, rs: &RateSample) {
        if self.state != State::ProbeRtt && self.probe_rtt_expired && !self.idle_restart {
            self.set_state(State::ProbeRtt);
            self.save_cwnd();
            self.probe_rtt_done_stamp = None;
            self.ack_phase = AckPhase::ProbeStopping;
            self.start_round();
        }
        if self.state == State::ProbeRtt {
            self.handle_probe_rtt(now);
        }
        if rs.delivered > 0 {
            self.idle_restart = false;
        }
    }

    /// `HandleProbeRTT()`.
    fn handle_probe_rtt(&mut self, now: Instant) {
        self.mark_app_limited();
        if self.probe_rtt_done_stamp.is_none() && self.inflight <= self.probe_rtt_cwnd() {
            self.probe_rtt_done_stamp = Some(now + PROBE_RTT_DURATION);
            self.probe_rtt_round_done = false;
            self.start_round();
        } else if self.probe_rtt_done_stamp.is_some() {
            if self.round_start {
                self.probe_rtt_round_done = true;
            }
            if self.probe_rtt_round_done {
                self.check_probe_rtt_done(now);
            }
        }
    }

    /// `CheckProbeRTTDone()`.
    fn check_probe_rtt_done(&mut self, now: Instant) {
        if self.probe_rtt_done_stamp.is_some_and(|done| now > done) {
            self.probe_rtt_min_stamp = now;
            self.restore_cwnd();
            self.exit_probe_rtt(now);
        }
    }

    /// `ExitProbeRTT()` (section 5.3.4.4).
    fn exit_probe_rtt(&mut self, now: Instant) {
        self.reset_short_term_model();
        if self.full_bw_reached {
            self.start_probe_bw_down(now);
            self.start_probe_bw_cruise();
        } else {
            self.enter_startup();
        }
    }

    /// `HandleRestartFromIdle()` (section 5.4.1).
    fn handle_restart_from_idle(&mut self, now: Instant) {
        if self.inflight == 0 && self.app_limited != 0 {
            self.idle_restart = true;
            self.extra_acked_interval_start = now;
            if self.state.is_probe_bw() {
                self.set_pacing_rate_with_gain(1.0);
            } else if self.state == State::ProbeRtt {
                self.check_probe_rtt_done(now);
            }
        }
    }

    // ----- Model (section 5.5) -----

    /// `UpdateRound()` (section 5.5.1), also rolling the window-limited flag.
    fn update_round(&mut self, rs: &RateSample) {
        if rs.has_record && rs.prior_delivered >= self.next_round_delivered {
            self.start_round();
            self.round_count += 1;
            self.rounds_since_probe_up += 1;
            self.round_start = true;
            self.cwnd_limited_prev_round = self.cwnd_limited_this_round;
            self.cwnd_limited_this_round = false;
        } else {
            self.round_start = false;
        }
    }

    /// `UpdateMaxBw()` (section 5.5.5).
    fn update_max_bw(&mut self, rs: &RateSample) {
        self.update_round(rs);
        if rs.delivery_rate > 0.0 && (rs.delivery_rate >= self.max_bw || !rs.is_app_limited) {
            let slot = &mut self.max_bw_slots[1];
            *slot = slot.max(rs.delivery_rate);
            self.max_bw = self.max_bw_slots[0].max(self.max_bw_slots[1]);
        }
    }

    /// `AdvanceMaxBwFilter()` (section 5.5.6): the current cycle becomes the previous one.
    fn advance_max_bw_filter(&mut self) {
        self.max_bw_slots = [self.max_bw_slots[1], 0.0];
        self.max_bw = self.max_bw_slots[0];
    }

    /// `UpdateACKAggregation()` (section 5.5.9).
    fn update_ack_aggregation(&mut self, now: Instant, rs: &RateSample) {
        let interval = now
            .saturating_duration_since(self.extra_acked_interval_start)
            .as_secs_f64();
        let mut expected = (self.bw * interval) as u64;
        if self.extra_acked_delivered <= expected {
            self.extra_acked_delivered = 0;
            self.extra_acked_interval_start = now;
            expected = 0;
        }
        self.extra_acked_delivered += rs.newly_acked;
        let extra = self
            .extra_acked_delivered
            .saturating_sub(expected)
            .min(self.cwnd);
        let filter_len = if self.full_bw_reached {
            EXTRA_ACKED_FILTER_LEN
        } else {
            1
        };
        self.extra_acked = self
            .extra_acked_filter
            .update(filter_len, self.round_count, extra);
    }

    /// `UpdateLatestDeliverySignals()` (section 5.5.10.3).
    fn update_latest_delivery_signals(&mut self, rs: &RateSample) {
        self.loss_round_start = false;
        if !rs.has_record {
            return;
        }
        self.bw_latest = self.bw_latest.max(rs.delivery_rate);
        self.inflight_latest = self.inflight_latest.max(rs.delivered);
        if rs.prior_delivered >= self.loss_round_delivered {
            self.loss_round_delivered = self.delivered;
            self.loss_round_start = true;
        }
    }

    /// `AdvanceLatestDeliverySignals()`.
    fn advance_latest_delivery_signals(&mut self, rs: &RateSample) {
        if self.loss_round_start {
            self.bw_latest = rs.delivery_rate;
            self.inflight_latest = rs.delivered;
        }
    }

    /// `ResetCongestionSignals()`.
    fn reset_congestion_signals(&mut self) {
        self.is_loss_in_round = false;
        self.bw_latest = 0.0;
        self.inflight_latest = 0;
    }

    /// `UpdateCongestionSignals()`.
    fn update_congestion_signals(&mut self, rs: &RateSample) {
        self.update_max_bw(rs);
        if !self.loss_round_start {
            return;
        }
        self.adapt_lower_bounds_from_congestion();
        self.is_loss_in_round = false;
    }

    /// `AdaptLowerBoundsFromCongestion()`, `InitLowerBounds()`, `LossLowerBounds()`.
    fn adapt_lower_bounds_from_congestion(&mut self) {
        if self.is_probing_bw() {
            return;
        }
        if self.is_loss_in_round {
            if self.bw_shortterm.is_infinite() {
                self.bw_shortterm = self.max_bw;
            }
            if self.inflight_shortterm == u64::MAX {
                self.inflight_shortterm = self.cwnd;
            }
            self.bw_shortterm = self.bw_latest.max(BETA * self.bw_shortterm);
            self.inflight_shortterm = self
                .inflight_latest
                .max((BETA * self.inflight_shortterm as f64) as u64);
        }
    }

    /// `ResetShortTermModel()`.
    fn reset_short_term_model(&mut self) {
        self.bw_shortterm = f64::INFINITY;
        self.inflight_shortterm = u64::MAX;
    }

    /// `BoundBWForModel()`.
    fn bound_bw_for_model(&mut self) {
        self.bw = self.max_bw.min(self.bw_shortterm);
    }

    // ----- Loss (sections 5.5.10.2, 5.5.11.1, 5.6.4.4) -----

    /// `SaveCwnd()`.
    fn save_cwnd(&mut self) {
        if !self.in_recovery && self.state != State::ProbeRtt {
            self.prior_cwnd = self.cwnd;
        } else {
            self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
        }
    }

    /// `RestoreCwnd()`.
    fn restore_cwnd(&mut self) {
        self.cwnd = self.cwnd.max(self.prior_cwnd);
    }

    /// `SaveStateUponLoss()`.
    fn save_state_upon_loss(&mut self) {
        self.save_cwnd();
        self.undo_state = None;
        self.undo_bw_shortterm = self.bw_shortterm;
        self.undo_inflight_shortterm = self.inflight_shortterm;
        self.undo_inflight_longterm = self.inflight_longterm;
    }

    /// `NoteLoss()`.
    fn note_loss(&mut self) {
        if !self.is_loss_in_round {
            self.loss_round_delivered = self.delivered;
            self.save_state_upon_loss();
        }
        self.is_loss_in_round = true;
    }

    /// `HandleInflightTooHigh()`.
    fn handle_inflight_too_high(&mut self, now: Instant, rs: &RateSample) {
        self.prev_probe_too_high = true;
        self.is_bw_probe_sample = false;
        if !rs.is_app_limited {
            let floor = (self.target_inflight() as f64 * BETA) as u64;
            self.inflight_longterm = rs.tx_in_flight.max(floor);
        }
        if self.state == State::ProbeBwUp {
            self.undo_state = Some(State::ProbeBwUp);
            self.start_probe_bw_down(now);
        }
    }

    /// `HandleLostPacket(P)` for the newest lost send `p` of a congestion event.
    fn handle_lost_packet(&mut self, now: Instant, p: Option<SendRecord>, lost_bytes: u64) {
        self.note_loss();
        if !self.is_bw_probe_sample {
            return;
        }
        let Some(p) = p else { return };
        let mut rs = RateSample {
            tx_in_flight: p.tx_in_flight,
            lost: self.lost.saturating_sub(p.lost),
            is_app_limited: p.app_limited,
            ..RateSample::default()
        };
        if is_inflight_too_high(&rs) {
            rs.tx_in_flight = inflight_at_loss(&rs, lost_bytes.min(p.bytes));
            self.handle_inflight_too_high(now, &rs);
        }
    }

    // ----- Control parameters (section 5.6) -----

    /// `UpdateMaxInflight()` (section 5.6.4.2).
    fn update_max_inflight(&mut self) {
        let cap = self.bdp_multiple(self.bw, self.cwnd_gain) + self.extra_acked;
        self.max_inflight = self.quantization_budget(cap);
    }

    /// `BoundCwndForModel()` (section 5.6.4.7).
    fn bound_cwnd_for_model(&mut self) {
        let mut cap = u64::MAX;
        if self.state.is_probe_bw() && self.state != State::ProbeBwCruise {
            cap = self.inflight_longterm;
        } else if self.state == State::ProbeRtt || self.state == State::ProbeBwCruise {
            cap = self.inflight_with_headroom();
        }
        cap = cap.min(self.inflight_shortterm).max(self.min_pipe_cwnd());
        self.cwnd = self.cwnd.min(cap);
    }

    /// `SetCwnd()` (section 5.6.4.6), with `BoundCwndForProbeRTT()`.
    fn set_cwnd(&mut self, rs: &RateSample) {
        self.update_max_inflight();
        if self.full_bw_reached {
            self.cwnd = (self.cwnd + rs.newly_acked).min(self.max_inflight);
        } else if self.cwnd < self.max_inflight || self.delivered < self.initial_cwnd {
            self.cwnd += rs.newly_acked;
        }
        self.cwnd = self.cwnd.max(self.min_pipe_cwnd());
        if self.state == State::ProbeRtt {
            self.cwnd = self.cwnd.min(self.probe_rtt_cwnd());
        }
        self.bound_cwnd_for_model();
    }

    /// `UpdateOnACK()` after the rate sample (section 5.2.3).
    fn update_on_ack(&mut self, now: Instant, rs: &RateSample) {
        // UpdateModelAndState()
        self.update_latest_delivery_signals(rs);
        self.update_congestion_signals(rs);
        self.update_ack_aggregation(now, rs);
        self.check_full_bw_reached(rs);
        self.check_startup_done(rs);
        self.check_drain_done(now);
        self.update_probe_bw_cycle_phase(now, rs);
        self.update_min_rtt(now, rs);
        self.check_probe_rtt(now, rs);
        self.advance_latest_delivery_signals(rs);
        self.bound_bw_for_model();
        // UpdateControlParameters()
        self.set_pacing_rate_with_gain(self.pacing_gain);
        self.set_send_quantum();
        self.set_cwnd(rs);
    }

    /// Applies one (possibly merged) congestion event.
    fn on_congestion(&mut self, event: &CongestionEvent, p: Option<SendRecord>) {
        self.inflight = self.inflight.saturating_sub(event.lost_bytes);
        self.lost += event.lost_bytes;
        if event.lost_bytes > 0 {
            self.loss_events_in_round =
                (self.loss_events_in_round + 1).min(STARTUP_LOSS_EVENTS_MAX);
        }
        let new_episode = self
            .recovery_start
            .is_none_or(|start| event.sent_time > start);
        if event.persistent {
            // OnEnterRTO().
            self.save_cwnd();
            self.save_state_upon_loss();
            self.in_recovery = true;
            self.recovery_start = Some(event.now);
            self.recovery_round = self.round_count;
            self.cwnd = (self.inflight + self.smss).max(self.min_pipe_cwnd());
        } else if new_episode {
            // OnEnterFastRecovery().
            self.save_cwnd();
            self.save_state_upon_loss();
            self.in_recovery = true;
            self.recovery_start = Some(event.now);
            self.recovery_round = self.round_count;
        }
        if event.lost_bytes > 0 {
            self.handle_lost_packet(event.now, p, event.lost_bytes);
        } else {
            // ECN-CE: congestion in this round, but no lost bytes.
            self.note_loss();
        }
    }
}

/// `IsInflightTooHigh()` (section 5.5.10.2); QUIC always has selective ACKs.
fn is_inflight_too_high(rs: &RateSample) -> bool {
    rs.lost as f64 > rs.tx_in_flight as f64 * LOSS_THRESH
}

/// `InflightAtLoss(P)` (section 5.5.10.2) for a lost send of `size` bytes.
fn inflight_at_loss(rs: &RateSample, size: u64) -> u64 {
    let inflight_prev = rs.tx_in_flight.saturating_sub(size) as f64;
    let lost_prev = rs.lost as f64 - size as f64;
    let lost_prefix = (LOSS_THRESH * inflight_prev - lost_prev) / (1.0 - LOSS_THRESH);
    (inflight_prev + lost_prefix).max(0.0) as u64
}

impl CongestionController for Bbr {
    fn name(&self) -> &str {
        "bbr"
    }

    fn on_packet_sent(&mut self, now: Instant, bytes: u64, app_limited: bool) {
        self.end_loss_batch();
        // Sends are recorded in time order; an engine clock that steps back is clamped.
        let now = self
            .records
            .back()
            .map_or(now, |last| now.max(last.send_time));
        let c = &mut self.core;
        // CheckIfApplicationLimited() (section 4.1.2.4): the engine says so, or nothing is
        // in flight after data was delivered (the application ran dry and writes again).
        if app_limited || (c.inflight == 0 && c.delivered > 0) {
            c.mark_app_limited();
        }
        // OnTransmit() (section 5.2.2).
        c.handle_restart_from_idle(now);
        // OnPacketSent() (section 4.1.2.2).
        if c.inflight == 0 {
            c.first_send_time = now;
            c.delivered_time = now;
        }
        c.inflight = c.inflight.saturating_add(bytes);
        // "Fully utilized the window": engines stop short of the last byte (see
        // CWND_LIMITED_ROOM_PACKETS). With less than one datagram here, quinn and uring
        // connections in ProbeBW_UP were not counted as window-limited, so UP never
        // raised inflight_longterm, and a flow that left Startup small stayed small.
        if c.inflight + CWND_LIMITED_ROOM_PACKETS * c.smss >= c.cwnd {
            c.cwnd_limited_this_round = true;
        }
        let record = SendRecord {
            send_time: now,
            bytes,
            delivered: c.delivered,
            delivered_time: c.delivered_time,
            first_send_time: c.first_send_time,
            app_limited: c.app_limited != 0,
            tx_in_flight: c.inflight,
            lost: c.lost,
        };
        match self.records.back_mut() {
            // Sends of the same instant are one aggregate (section 4.1.3.1).
            Some(last) if last.send_time == now => {
                last.bytes += bytes;
                last.tx_in_flight = record.tx_in_flight;
                last.app_limited |= record.app_limited;
            }
            _ => self.records.push_back(record),
        }
    }

    fn on_ack(&mut self, ack: &AckEvent) {
        self.end_loss_batch();
        let p = self.record(ack.sent_time);
        let c = &mut self.core;
        c.inflight = c.inflight.saturating_sub(ack.bytes);
        let first_rtt = c.srtt.is_none();
        c.srtt = Some(ack.rtt.smoothed);
        c.rttvar = ack.rtt.variance;
        c.conn_min_rtt = Some(ack.rtt.min);
        if first_rtt && !c.full_bw_reached && c.max_bw == 0.0 {
            c.init_pacing_rate();
        }
        // Recovery ends with the first ACK of a packet sent after it started.
        if c.in_recovery && c.recovery_start.is_some_and(|start| ack.sent_time > start) {
            c.in_recovery = false;
            c.restore_cwnd();
        }

        // GenerateRateSample() (section 4.1.2.3).
        c.delivered += ack.bytes;
        c.delivered_time = ack.now;
        if c.app_limited != 0 && c.delivered > c.app_limited {
            c.app_limited = 0;
        }
        let mut rs = RateSample {
            newly_acked: ack.bytes,
            rtt: Some(ack.now.saturating_duration_since(ack.sent_time)),
            ..RateSample::default()
        };
        if let Some(p) = p {
            rs.has_record = true;
            rs.prior_delivered = p.delivered;
            rs.is_app_limited = p.app_limited || ack.app_limited;
            rs.tx_in_flight = p.tx_in_flight;
            rs.lost = c.lost.saturating_sub(p.lost);
            c.first_send_time = c.first_send_time.max(p.send_time);
            let send_elapsed = p.send_time.saturating_duration_since(p.first_send_time);
            let ack_elapsed = ack.now.saturating_duration_since(p.delivered_time);
            let interval = send_elapsed.max(ack_elapsed);
            rs.delivered = c.delivered.saturating_sub(p.delivered);
            let reliable = c.conn_min_rtt.is_none_or(|min| interval >= min);
            if reliable && !interval.is_zero() {
                rs.delivery_rate = rs.delivered as f64 / interval.as_secs_f64();
            }
        } else {
            rs.is_app_limited = ack.app_limited;
        }

        c.update_on_ack(ack.now, &rs);
        let rtt = rs.rtt.unwrap_or_default();
        self.prune_records(ack.sent_time, rtt);
    }

    fn on_ack_batch_end(&mut self, _now: Instant, bytes_in_flight: Option<u64>) {
        self.end_loss_batch();
        // An engine that counts in-flight bytes itself is authoritative.
        if let Some(bytes_in_flight) = bytes_in_flight {
            self.core.inflight = bytes_in_flight;
        }
    }

    fn on_congestion_event(&mut self, event: &CongestionEvent) {
        let (merged, before) = match self.loss_batch {
            Some(batch) if batch.event.now == event.now => {
                let mut merged = batch.event;
                merged.sent_time = merged.sent_time.max(event.sent_time);
                merged.lost_bytes += event.lost_bytes;
                merged.persistent |= event.persistent;
                merged.ecn &= event.ecn;
                (merged, batch.before)
            }
            _ => (*event, self.core),
        };
        self.core = before;
        let p = self.record(merged.sent_time);
        self.core.on_congestion(&merged, p);
        self.loss_batch = Some(LossBatch {
            event: merged,
            before,
        });
    }

    fn on_packet_discarded(&mut self, bytes: u64) {
        // s2n-quic discards lost MTU probes in the middle of a loss-detection pass: this
        // does not end the pass, and the state it would be replayed from loses the bytes
        // too.
        if let Some(batch) = &mut self.loss_batch {
            batch.before.inflight = batch.before.inflight.saturating_sub(bytes);
        }
        self.core.inflight = self.core.inflight.saturating_sub(bytes);
    }

    fn on_mtu_update(&mut self, max_datagram_size: u16) {
        self.end_loss_batch();
        let c = &mut self.core;
        c.smss = u64::from(max_datagram_size).max(1);
        c.cwnd = c.cwnd.max(c.min_pipe_cwnd());
    }

    fn window(&self) -> u64 {
        self.core.cwnd
    }

    fn initial_window(&self) -> u64 {
        self.core.initial_cwnd
    }

    fn pacing_rate(&self) -> Option<u64> {
        Some((self.core.pacing_rate as u64).max(1))
    }

    fn metrics(&self) -> CongestionMetrics {
        CongestionMetrics::new(self.core.cwnd, self.core.inflight)
            .with_pacing_rate(self.pacing_rate())
    }

    fn clone_box(&self) -> Box<dyn CongestionController> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BinaryHeap};

    use super::*;
    use crate::congestion::{builtin_factory, RttSample};
    use crate::CongestionAlgorithm;

    const MSS: u16 = 1200;
    const MSS_BYTES: u64 = 1200;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// How the simulated engine reports the losses found by one detection pass.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum LossReport {
        /// One congestion event per lost packet (s2n-quic).
        PerPacket,
        /// One congestion event for all of them (quinn).
        PerBatch,
    }

    /// One bottleneck: a fixed-rate link behind a bounded FIFO that drops on overflow,
    /// a fixed propagation delay split evenly between the two directions, and optional
    /// random loss on the link.
    #[derive(Debug, Clone, Copy)]
    struct Path {
        /// Link rate, bytes per second.
        rate: f64,
        /// Round-trip propagation delay.
        base_rtt: Duration,
        /// FIFO capacity, bytes.
        buffer: u64,
        /// Probability that a packet is lost on the link (after using its capacity).
        loss: f64,
        /// Seed of the loss process.
        seed: u64,
        /// From this time on (ns), the link runs at this rate instead.
        rate_change: Option<(u64, f64)>,
    }

    impl Path {
        /// `mbit` Mbit/s, `rtt_ms` base RTT, a buffer of `buffer_bdp` bandwidth-delay
        /// products, random loss `loss`.
        fn new(mbit: f64, rtt_ms: u64, buffer_bdp: f64, loss: f64) -> Path {
            let rate = mbit * 1e6 / 8.0;
            let base_rtt = ms(rtt_ms);
            Path {
                rate,
                base_rtt,
                buffer: (buffer_bdp * rate * base_rtt.as_secs_f64()) as u64,
                loss,
                seed: 0x5EED,
                rate_change: None,
            }
        }

        /// The link rate at time `at` (ns), bytes per second.
        fn rate_at(&self, at: u64) -> f64 {
            match self.rate_change {
                Some((from, rate)) if at >= from => rate,
                _ => self.rate,
            }
        }
    }

    /// The receiver's delayed-ACK timer when fewer than two packets are unacknowledged.
    const ACK_DELAY_NS: u64 = 5_000_000;

    /// Simulation events. Times are nanoseconds since the start.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Ev {
        /// The flow may be able to send (pacing timer, start, application data).
        Send(usize),
        /// A packet leaves the bottleneck and reaches the receiver.
        Recv(usize, u64),
        /// The receiver's delayed-ACK timer, with its generation.
        AckTimer(usize, u64),
        /// An ACK for these packet numbers reaches the sender.
        Ack(usize, Vec<u64>),
        /// The sender's probe timeout, with its generation.
        Pto(usize, u64),
    }

    /// How the simulated engine reports the packets acknowledged by one ACK frame.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum AckReport {
        /// One `on_ack` for the frame, then `on_ack_batch_end(None)` (s2n-quic).
        PerFrame,
        /// One `on_ack` per packet, then `on_ack_batch_end(Some(in flight))` (quinn).
        PerPacket,
    }

    /// The application's sending limit: `rate` bytes per second during `[from, until)`,
    /// unlimited otherwise.
    #[derive(Debug, Clone, Copy)]
    struct AppLimit {
        from: u64,
        until: u64,
        rate: f64,
    }

    /// What the controller looked like after one ACK.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct TracePoint {
        at: u64,
        state: State,
        cwnd: u64,
        pacing_rate: f64,
        max_bw: f64,
        bw: f64,
        inflight_longterm: u64,
        probe_rtt_min_stamp: Instant,
        min_rtt: Option<Duration>,
    }

    /// One sender/receiver pair: the sender's own RFC 9002 style bookkeeping (packet
    /// numbers, RTT estimate, packet- and time-threshold loss detection) driving the
    /// controller through the trait, as an engine would.
    struct Flow {
        cc: Bbr,
        start: u64,
        loss_report: LossReport,
        ack_report: AckReport,
        /// Packets per `on_packet_sent` (a GSO batch), at most.
        gso: u64,
        /// Whether the engine ignores `pacing_rate()` and paces at 1.25 * window / srtt,
        /// as quinn-proto's pacer does.
        window_pacing: bool,
        /// The engine sends a datagram only while at least this much of the window is
        /// free (at least one datagram): one datagram for an engine that fills the window,
        /// more for one that stops short of it (as paced quinn connections were traced
        /// doing, about two datagrams below the window).
        min_room: u64,
        app: Option<AppLimit>,
        app_credit: f64,
        app_mark: u64,
        next_pn: u64,
        outstanding: BTreeMap<u64, (u64, u64)>,
        inflight: u64,
        next_send: u64,
        send_timer: Option<u64>,
        srtt: Option<u64>,
        rttvar: u64,
        min_rtt: u64,
        latest_rtt: u64,
        largest_acked: Option<u64>,
        pending_acks: Vec<u64>,
        ack_gen: u64,
        pto_gen: u64,
        acked_log: Vec<(u64, u64)>,
        trace: Vec<TracePoint>,
        lost_packets: u64,
        multi_packet_loss_passes: u64,
    }

    impl Flow {
        fn new(cc: Bbr, start: Duration, loss_report: LossReport) -> Flow {
            Flow {
                cc,
                start: start.as_nanos() as u64,
                loss_report,
                ack_report: AckReport::PerFrame,
                gso: 1,
                window_pacing: false,
                min_room: MSS_BYTES,
                app: None,
                app_credit: 0.0,
                app_mark: 0,
                next_pn: 0,
                outstanding: BTreeMap::new(),
                inflight: 0,
                next_send: 0,
                send_timer: None,
                srtt: None,
                rttvar: 0,
                min_rtt: u64::MAX,
                latest_rtt: 0,
                largest_acked: None,
                pending_acks: Vec::new(),
                ack_gen: 0,
                pto_gen: 0,
                acked_log: Vec::new(),
                trace: Vec::new(),
                lost_packets: 0,
                multi_packet_loss_passes: 0,
            }
        }

        fn rtt_sample(&self) -> RttSample {
            let srtt = self.srtt.unwrap_or(self.latest_rtt);
            RttSample {
                latest: Duration::from_nanos(self.latest_rtt),
                smoothed: Duration::from_nanos(srtt),
                min: Duration::from_nanos(self.min_rtt),
                variance: Duration::from_nanos(self.rttvar),
            }
        }

        /// Goodput (acknowledged bytes per second) over `[from, until)`.
        fn goodput(&self, from: Duration, until: Duration) -> f64 {
            let (a, b) = (from.as_nanos() as u64, until.as_nanos() as u64);
            let bytes: u64 = self
                .acked_log
                .iter()
                .filter(|(t, _)| *t >= a && *t < b)
                .map(|(_, n)| n)
                .sum();
            bytes as f64 / (until - from).as_secs_f64()
        }
    }

    /// The discrete-event model.
    struct Sim {
        path: Path,
        t0: Instant,
        now: u64,
        seq: u64,
        events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
        link_free_at: u64,
        rng: SplitMix64,
        flows: Vec<Flow>,
        /// `(arrival at the bottleneck, queueing delay)` of every packet queued, ns.
        queue_delays: Vec<(u64, u64)>,
        overflow_drops: u64,
    }

    impl Sim {
        fn new(path: Path, t0: Instant) -> Sim {
            Sim {
                path,
                t0,
                now: 0,
                seq: 0,
                events: BinaryHeap::new(),
                link_free_at: 0,
                rng: SplitMix64(path.seed),
                flows: Vec::new(),
                queue_delays: Vec::new(),
                overflow_drops: 0,
            }
        }

        fn add_flow(&mut self, flow: Flow) -> usize {
            let id = self.flows.len();
            let start = flow.start;
            self.flows.push(flow);
            self.schedule(start, Ev::Send(id));
            id
        }

        fn instant(&self, ns: u64) -> Instant {
            self.t0 + Duration::from_nanos(ns)
        }

        fn schedule(&mut self, at: u64, ev: Ev) {
            self.seq += 1;
            self.events.push(Reverse((at, self.seq, ev)));
        }

        fn half_rtt(&self) -> u64 {
            self.path.base_rtt.as_nanos() as u64 / 2
        }

        /// Runs until simulated time `until`.
        fn run_until(&mut self, until: Duration) {
            let until = until.as_nanos() as u64;
            while let Some(Reverse((at, _, _))) = self.events.peek() {
                if *at > until {
                    break;
                }
                let Reverse((at, _, ev)) = self.events.pop().unwrap();
                self.now = at;
                match ev {
                    Ev::Send(f) => {
                        if self.flows[f].send_timer == Some(at) {
                            self.flows[f].send_timer = None;
                        }
                        self.try_send(f);
                    }
                    Ev::Recv(f, pn) => self.receive(f, pn),
                    Ev::AckTimer(f, generation) => {
                        let flow = &mut self.flows[f];
                        if generation == flow.ack_gen && !flow.pending_acks.is_empty() {
                            let pns = std::mem::take(&mut flow.pending_acks);
                            let at = self.now + self.half_rtt();
                            self.schedule(at, Ev::Ack(f, pns));
                        }
                    }
                    Ev::Ack(f, pns) => self.on_ack(f, &pns),
                    Ev::Pto(f, generation) => self.on_pto(f, generation),
                }
            }
            self.now = until;
        }

        /// Schedules a send wake-up for flow `f` at `at` unless one is pending earlier.
        fn wake(&mut self, f: usize, at: u64) {
            let flow = &mut self.flows[f];
            if flow.send_timer.is_some_and(|t| t <= at) {
                return;
            }
            flow.send_timer = Some(at);
            self.schedule(at, Ev::Send(f));
        }

        /// Sends whatever window, pacing and the application allow.
        fn try_send(&mut self, f: usize) {
            loop {
                let now = self.now;
                let flow = &mut self.flows[f];
                if now < flow.start {
                    let start = flow.start;
                    return self.wake(f, start);
                }
                // Application data.
                let mut app_limited = false;
                if let Some(app) = flow.app {
                    if now >= app.from && now < app.until {
                        let since = now.saturating_sub(flow.app_mark.max(app.from));
                        flow.app_credit += app.rate * since as f64 / 1e9;
                        flow.app_mark = now;
                        if app.rate <= 0.0 {
                            return self.wake(f, app.until);
                        }
                        if flow.app_credit < MSS_BYTES as f64 {
                            let wait = (MSS_BYTES as f64 - flow.app_credit) / app.rate * 1e9;
                            return self.wake(f, now + wait.ceil() as u64 + 1);
                        }
                        app_limited = flow.app_credit - (MSS_BYTES as f64) < MSS_BYTES as f64;
                    }
                }
                assert!(flow.min_room >= MSS_BYTES, "min_room below one datagram");
                if flow.cc.window().saturating_sub(flow.inflight) < flow.min_room {
                    return;
                }
                if flow.next_send > now {
                    let at = flow.next_send;
                    return self.wake(f, at);
                }
                if app_limited || flow.app.is_some_and(|a| now >= a.from && now < a.until) {
                    flow.app_credit -= MSS_BYTES as f64;
                }
                // Send one packet, or a GSO batch of packets that the window allows (the
                // application limit applies to single packets only).
                let room =
                    (flow.cc.window() - flow.inflight - (flow.min_room - MSS_BYTES)) / MSS_BYTES;
                let batch = if flow.app.is_some() {
                    1
                } else {
                    room.min(flow.gso)
                };
                let bytes = batch * MSS_BYTES;
                let first_pn = flow.next_pn;
                flow.next_pn += batch;
                let t = self.t0 + Duration::from_nanos(now);
                flow.cc.on_packet_sent(t, bytes, app_limited);
                for pn in first_pn..first_pn + batch {
                    flow.outstanding.insert(pn, (now, MSS_BYTES));
                }
                flow.inflight += bytes;
                let rate = match (flow.window_pacing, flow.srtt) {
                    (true, Some(srtt)) => 1.25 * flow.cc.window() as f64 / (srtt as f64 / 1e9),
                    (true, None) => f64::INFINITY,
                    (false, _) => flow.cc.pacing_rate().unwrap() as f64,
                };
                flow.next_send = flow.next_send.max(now) + (bytes as f64 / rate * 1e9) as u64;
                self.arm_pto(f);
                // The bottleneck.
                for pn in first_pn..first_pn + batch {
                    let arrival = now + self.half_rtt();
                    let backlog_ns = self.link_free_at.saturating_sub(arrival);
                    let rate = self.path.rate_at(arrival);
                    let backlog = backlog_ns as f64 * rate / 1e9;
                    if backlog + MSS_BYTES as f64 > self.path.buffer as f64 {
                        self.overflow_drops += 1;
                        continue;
                    }
                    let start = arrival.max(self.link_free_at);
                    let depart = start + (MSS_BYTES as f64 / rate * 1e9) as u64;
                    self.link_free_at = depart;
                    self.queue_delays.push((arrival, start - arrival));
                    if self.path.loss > 0.0 && self.rng.next_f64() < self.path.loss {
                        continue;
                    }
                    self.schedule(depart, Ev::Recv(f, pn));
                }
            }
        }

        fn arm_pto(&mut self, f: usize) {
            let flow = &mut self.flows[f];
            flow.pto_gen += 1;
            let srtt = flow.srtt.unwrap_or(333_000_000);
            let pto = 2 * srtt + 4 * flow.rttvar + 2 * ACK_DELAY_NS;
            let (at, generation) = (self.now + pto, flow.pto_gen);
            self.schedule(at, Ev::Pto(f, generation));
        }

        fn receive(&mut self, f: usize, pn: u64) {
            let flow = &mut self.flows[f];
            flow.pending_acks.push(pn);
            if flow.pending_acks.len() >= 2 {
                let pns = std::mem::take(&mut flow.pending_acks);
                let at = self.now + self.half_rtt();
                self.schedule(at, Ev::Ack(f, pns));
            } else {
                flow.ack_gen += 1;
                let (at, generation) = (self.now + ACK_DELAY_NS, flow.ack_gen);
                self.schedule(at, Ev::AckTimer(f, generation));
            }
        }

        fn on_ack(&mut self, f: usize, pns: &[u64]) {
            let now = self.now;
            let t = self.instant(now);
            let flow = &mut self.flows[f];
            let mut bytes = 0;
            let mut newest: Option<(u64, u64)> = None;
            let mut acked = Vec::new();
            for pn in pns {
                if let Some((sent, size)) = flow.outstanding.remove(pn) {
                    bytes += size;
                    acked.push((sent, size));
                    if newest.is_none_or(|(p, _)| *pn > p) {
                        newest = Some((*pn, sent));
                    }
                }
            }
            let Some((largest, newest_sent)) = newest else {
                return;
            };
            flow.inflight -= bytes;
            // RFC 9002 section 5.3 (no ACK delay).
            let latest = now - newest_sent;
            flow.latest_rtt = latest;
            flow.min_rtt = flow.min_rtt.min(latest);
            match flow.srtt {
                None => {
                    flow.srtt = Some(latest);
                    flow.rttvar = latest / 2;
                }
                Some(srtt) => {
                    flow.rttvar = (3 * flow.rttvar + srtt.abs_diff(latest)) / 4;
                    flow.srtt = Some((7 * srtt + latest) / 8);
                }
            }
            flow.largest_acked = Some(flow.largest_acked.map_or(largest, |l| l.max(largest)));
            let rtt = flow.rtt_sample();
            let ack_event = |sent: u64, bytes: u64| AckEvent {
                now: t,
                sent_time: self.t0 + Duration::from_nanos(sent),
                bytes,
                app_limited: false,
                rtt,
            };
            match flow.ack_report {
                AckReport::PerFrame => flow.cc.on_ack(&ack_event(newest_sent, bytes)),
                AckReport::PerPacket => {
                    for (sent, size) in acked {
                        flow.cc.on_ack(&ack_event(sent, size));
                    }
                }
            }
            flow.acked_log.push((now, bytes));
            // RFC 9002 section 6.1: packet and time thresholds.
            let largest_acked = flow.largest_acked.unwrap();
            let loss_delay = 9 * flow.srtt.unwrap().max(flow.latest_rtt) / 8;
            let lost: Vec<(u64, u64, u64)> = flow
                .outstanding
                .range(..largest_acked)
                .filter(|(pn, (sent, _))| **pn + 3 <= largest_acked || sent + loss_delay <= now)
                .map(|(pn, (sent, size))| (*pn, *sent, *size))
                .collect();
            self.report_losses(f, &lost, false);
            let flow = &mut self.flows[f];
            let engine_count = (flow.ack_report == AckReport::PerPacket).then_some(flow.inflight);
            flow.cc.on_ack_batch_end(t, engine_count);
            let cc = &flow.cc.core;
            flow.trace.push(TracePoint {
                at: now,
                state: cc.state,
                cwnd: cc.cwnd,
                pacing_rate: cc.pacing_rate,
                max_bw: cc.max_bw,
                bw: cc.bw,
                inflight_longterm: cc.inflight_longterm,
                probe_rtt_min_stamp: cc.probe_rtt_min_stamp,
                min_rtt: cc.min_rtt,
            });
            self.arm_pto(f);
            self.try_send(f);
        }

        /// Declares `lost` (packet number, send time, size) lost and tells the controller.
        fn report_losses(&mut self, f: usize, lost: &[(u64, u64, u64)], persistent: bool) {
            if lost.is_empty() {
                return;
            }
            let t = self.instant(self.now);
            let flow = &mut self.flows[f];
            for (pn, _, size) in lost {
                flow.outstanding.remove(pn);
                flow.inflight -= size;
            }
            flow.lost_packets += lost.len() as u64;
            if lost.len() > 1 {
                flow.multi_packet_loss_passes += 1;
            }
            let event = |sent: u64, bytes: u64| CongestionEvent {
                now: t,
                sent_time: self.t0 + Duration::from_nanos(sent),
                lost_bytes: bytes,
                persistent,
                ecn: false,
            };
            match flow.loss_report {
                LossReport::PerPacket => {
                    for (_, sent, size) in lost {
                        flow.cc.on_congestion_event(&event(*sent, *size));
                    }
                }
                LossReport::PerBatch => {
                    let newest = lost.iter().map(|l| l.1).max().unwrap();
                    let bytes = lost.iter().map(|l| l.2).sum();
                    flow.cc.on_congestion_event(&event(newest, bytes));
                }
            }
        }

        /// A probe timeout with nothing acknowledged: everything outstanding is lost.
        fn on_pto(&mut self, f: usize, generation: u64) {
            let flow = &self.flows[f];
            if generation != flow.pto_gen || flow.outstanding.is_empty() {
                return;
            }
            let lost: Vec<(u64, u64, u64)> = flow
                .outstanding
                .iter()
                .map(|(pn, (sent, size))| (*pn, *sent, *size))
                .collect();
            self.report_losses(f, &lost, false);
            let t = self.instant(self.now);
            let flow = &mut self.flows[f];
            flow.cc.on_ack_batch_end(t, Some(flow.inflight));
            self.try_send(f);
        }

        /// Mean and maximum queueing delay of packets reaching the bottleneck in
        /// `[from, until)`.
        fn queue_delay(&self, from: Duration, until: Duration) -> (Duration, Duration) {
            let (a, b) = (from.as_nanos() as u64, until.as_nanos() as u64);
            let delays: Vec<u64> = self
                .queue_delays
                .iter()
                .filter(|(t, _)| *t >= a && *t < b)
                .map(|(_, d)| *d)
                .collect();
            let max = delays.iter().copied().max().unwrap_or(0);
            let mean = delays.iter().sum::<u64>() / delays.len().max(1) as u64;
            (Duration::from_nanos(mean), Duration::from_nanos(max))
        }
    }

    /// One BBR flow from time 0 on `path`, for `secs` seconds.
    fn single_flow(path: Path, secs: u64, report: LossReport) -> Sim {
        single_flow_from(Instant::now(), path, secs, report)
    }

    /// As [`single_flow`], with the simulation's time origin `t0`.
    fn single_flow_from(t0: Instant, path: Path, secs: u64, report: LossReport) -> Sim {
        let mut sim = Sim::new(path, t0);
        sim.add_flow(Flow::new(
            Bbr::with_seed(t0, MSS, 1),
            Duration::ZERO,
            report,
        ));
        sim.run_until(Duration::from_secs(secs));
        sim
    }

    fn ack(now: Instant, sent_time: Instant, bytes: u64, rtt: Duration) -> AckEvent {
        AckEvent {
            now,
            sent_time,
            bytes,
            app_limited: false,
            rtt: RttSample::constant(rtt),
        }
    }

    fn loss(now: Instant, sent_time: Instant, lost_bytes: u64) -> CongestionEvent {
        CongestionEvent {
            now,
            sent_time,
            lost_bytes,
            persistent: false,
            ecn: false,
        }
    }

    #[test]
    fn constants_match_the_draft() {
        assert_eq!(STARTUP_PACING_GAIN, 2.77);
        assert!((STARTUP_PACING_GAIN - 4.0 * 2f64.ln()).abs() < 0.01);
        assert_eq!(DRAIN_PACING_GAIN, 0.5);
        assert_eq!(DEFAULT_CWND_GAIN, 2.0);
        assert_eq!(State::ProbeBwDown.gains(), (0.9, 2.0));
        assert_eq!(State::ProbeBwCruise.gains(), (1.0, 2.0));
        assert_eq!(State::ProbeBwRefill.gains(), (1.0, 2.0));
        assert_eq!(State::ProbeBwUp.gains(), (1.25, 2.25));
        assert_eq!(State::ProbeRtt.gains(), (1.0, 0.5));
        assert_eq!(LOSS_THRESH, 0.02);
        assert_eq!(BETA, 0.7);
        assert_eq!(HEADROOM, 0.15);
        assert_eq!(PACING_MARGIN_PERCENT, 1.0);
        assert_eq!(MIN_PIPE_CWND_PACKETS, 4);
        assert_eq!(PROBE_RTT_INTERVAL, Duration::from_secs(5));
        assert_eq!(PROBE_RTT_DURATION, ms(200));
        assert_eq!(MIN_RTT_FILTER_LEN, Duration::from_secs(10));
    }

    #[test]
    fn initial_state_factory_and_metrics() {
        let t0 = Instant::now();
        let cc = Bbr::with_seed(t0, MSS, 7);
        assert_eq!(cc.name(), "bbr");
        assert_eq!(cc.initial_window(), 12_000);
        assert_eq!(cc.window(), 12_000);
        assert_eq!(cc.core.state, State::Startup);
        // InitPacingRate() without an RTT sample: 2.77 * 12000 bytes / 1 ms.
        assert_eq!(cc.pacing_rate(), Some(33_240_000));
        let m = cc.metrics();
        assert_eq!(m.window, 12_000);
        assert_eq!(m.ssthresh, None);
        assert_eq!(m.pacing_rate, Some(33_240_000));
        assert_eq!(m.bytes_in_flight, 0);

        let factory = builtin_factory(CongestionAlgorithm::Bbr).unwrap();
        assert_eq!(factory.name(), "bbr");
        let built = factory.build(t0, 1500);
        assert_eq!(built.name(), "bbr");
        assert_eq!(built.window(), 14_720);
        assert!(built.pacing_rate().is_some());

        // The seeded factory is reproducible and gives each flow its own sequence.
        let a = BbrFactory::with_seed(3);
        let b = BbrFactory::with_seed(3);
        let (a0, a1) = (a.build(t0, MSS), a.build(t0, MSS));
        let b0 = b.build(t0, MSS);
        assert_eq!(format!("{a0:?}"), format!("{b0:?}"));
        assert_ne!(format!("{a0:?}"), format!("{a1:?}"));
    }

    #[test]
    fn first_rtt_sample_sets_the_initial_pacing_rate() {
        let t0 = Instant::now();
        let mut cc = Bbr::with_seed(t0, MSS, 7);
        cc.on_packet_sent(t0, 1_200, false);
        cc.on_ack(&ack(t0 + ms(40), t0, 1_200, ms(40)));
        // 2.77 * 12000 / 40 ms, and one datagram acknowledged grows the window.
        assert_eq!(cc.pacing_rate(), Some(831_000));
        assert_eq!(cc.window(), 13_200);
        assert_eq!(cc.metrics().bytes_in_flight, 0);
    }

    #[test]
    fn max_filter_keeps_the_windowed_maximum() {
        let mut f = MaxFilter::default();
        assert_eq!(f.update(10, 0, 5), 5);
        assert_eq!(f.update(10, 1, 3), 5);
        assert_eq!(f.update(10, 5, 4), 5);
        assert_eq!(f.update(10, 10, 2), 5);
        // Sample 5 (t = 0) leaves the 10-round window; the best later one is 4 (t = 5).
        assert_eq!(f.update(10, 11, 1), 4);
        assert_eq!(f.update(10, 16, 1), 2);
        assert_eq!(f.update(10, 30, 1), 1);
        assert_eq!(f.update(10, 31, 9), 9);
    }

    #[test]
    fn inflight_at_loss_solves_for_the_threshold_crossing() {
        // 100 kB in flight when the 1200-byte packet was sent, 5 kB lost since: the loss
        // rate crossed 2% after lost_prefix = (0.02 * 98800 - 3800) / 0.98 < 0, i.e. before
        // this packet: inflight_at_loss = 98800 - 1860.4.
        let rs = RateSample {
            tx_in_flight: 100_000,
            lost: 5_000,
            ..RateSample::default()
        };
        assert!(is_inflight_too_high(&rs));
        let expected = 98_800.0 + (0.02 * 98_800.0 - 3_800.0) / 0.98;
        assert_eq!(inflight_at_loss(&rs, 1_200), expected as u64);
        let rs = RateSample {
            tx_in_flight: 100_000,
            lost: 2_000,
            ..RateSample::default()
        };
        assert!(!is_inflight_too_high(&rs));
    }

    #[test]
    fn bandwidth_estimate_converges_and_drain_empties_the_queue() {
        // 20 Mbit/s, 40 ms, a buffer of two BDPs, no random loss.
        let path = Path::new(20.0, 40, 2.0, 0.0);
        let sim = single_flow(path, 20, LossReport::PerBatch);
        let flow = &sim.flows[0];
        let cc = &flow.cc.core;
        let error = (cc.max_bw - path.rate).abs() / path.rate;
        println!(
            "max_bw {:.0} B/s vs bottleneck {:.0} B/s: error {:.2}%",
            cc.max_bw,
            path.rate,
            100.0 * error
        );
        assert!(error < 0.10, "bandwidth estimate error {error}");
        assert!(cc.full_bw_reached);
        // min_rtt: 40 ms plus one serialization time.
        let min_rtt = cc.min_rtt.unwrap();
        assert!(min_rtt >= ms(40) && min_rtt < ms(41), "{min_rtt:?}");

        // Startup exits within a second or so, through Drain, into ProbeBW.
        let startup_end = flow
            .trace
            .iter()
            .find(|p| p.state != State::Startup)
            .unwrap();
        assert_eq!(startup_end.state, State::Drain);
        assert!(startup_end.at < 1_500_000_000, "{}", startup_end.at);
        let drain_end = flow
            .trace
            .iter()
            .find(|p| p.at > startup_end.at && p.state != State::Drain)
            .unwrap();
        assert!(drain_end.state.is_probe_bw(), "{:?}", drain_end.state);
        // Drain took at most about three rounds.
        assert!(drain_end.at - startup_end.at < 200_000_000);

        // After Drain, the queue stays below one base RTT of delay.
        let steady = Duration::from_nanos(drain_end.at) + ms(200);
        let (mean, max) = sim.queue_delay(steady, Duration::from_secs(20));
        let (startup_mean, startup_max) = sim.queue_delay(Duration::ZERO, steady);
        println!(
            "queue delay: startup mean {startup_mean:?} max {startup_max:?}; \
             steady state mean {mean:?} max {max:?}"
        );
        assert!(max < path.base_rtt, "max queueing delay {max:?}");
        assert!(mean < path.base_rtt / 4, "mean queueing delay {mean:?}");
        // And the link stays busy.
        let share = flow.goodput(Duration::from_secs(5), Duration::from_secs(20)) / path.rate;
        println!("delivered share (5..20 s, lossless): {:.1}%", 100.0 * share);
        assert!(share > 0.9, "{share}");
    }

    /// The delivered share on `path` over the last 10 s of a 30 s run, per seed.
    fn lossy_shares(path: Path, seeds: std::ops::RangeInclusive<u64>) -> Vec<f64> {
        seeds
            .map(|seed| {
                let path = Path { seed, ..path };
                let t0 = Instant::now();
                let mut sim = Sim::new(path, t0);
                sim.add_flow(Flow::new(
                    Bbr::with_seed(t0, MSS, seed),
                    Duration::ZERO,
                    LossReport::PerBatch,
                ));
                sim.run_until(Duration::from_secs(30));
                sim.flows[0].goodput(Duration::from_secs(20), Duration::from_secs(30)) / path.rate
            })
            .collect()
    }

    /// The issue's target: on 50 Mbit/s, 40 ms, 1% random loss, at least 80% of the
    /// bottleneck delivered over the last 10 s of 30 s (mean of 8 seeds; buffer one BDP).
    ///
    /// Not met: the model gives a mean of 78.9% (69.7% to 83.8% by seed). The shortfall
    /// is the draft's own loss response while not probing: every round of ProbeBW_CRUISE
    /// with a loss sets `bw_shortterm = max(bw_latest, 0.7 * bw_shortterm)`, and
    /// `bw_latest` (what was delivered at the pacing rate) is about 2% below the rate
    /// paced at (1% margin, 1% loss), so `bw` slides from the link rate to about two
    /// thirds of it over each 2 to 3 s cruise, until REFILL or ProbeRTT resets the
    /// short-term model (section 5.3.3.8.3 of the draft models exactly this decay). It
    /// bites because BBR's own pacing leaves the link unsaturated in CRUISE, so
    /// `bw_latest` measures the paced rate: under an engine that paces from the window
    /// instead (quinn-proto, see `window_pacing_comparison`), the same path delivers 96%,
    /// with a standing queue of about 29 ms instead of 0.2 ms.
    #[test]
    #[ignore = "target not met by the draft's algorithm on this model: 78.9% mean, see docs"]
    fn lossy_path_delivers_eighty_percent() {
        let shares = lossy_shares(Path::new(50.0, 40, 1.0, 0.01), 1..=8);
        let mean = shares.iter().sum::<f64>() / shares.len() as f64;
        println!("delivered shares {shares:.3?}, mean {:.1}%", 100.0 * mean);
        assert!(mean >= 0.8, "mean delivered share {mean}");
    }

    /// The lossy path's figures with buffers of 0.5, 1 and 2 BDPs (prints only:
    /// `cargo test -p stoq-core lossy_sweep -- --ignored --nocapture`).
    #[test]
    #[ignore = "a sweep that prints figures"]
    fn lossy_sweep() {
        for buffer in [0.5, 1.0, 2.0] {
            let shares = lossy_shares(Path::new(50.0, 40, buffer, 0.01), 1..=8);
            let mean = shares.iter().sum::<f64>() / shares.len() as f64;
            let min = shares.iter().copied().fold(f64::INFINITY, f64::min);
            let max = shares.iter().copied().fold(0.0, f64::max);
            println!(
                "buffer {buffer} BDP: delivered share over 20..30 s mean {:.1}%, \
                 min {:.1}%, max {:.1}%",
                100.0 * mean,
                100.0 * min,
                100.0 * max
            );
        }
    }

    /// The state changes of a trace: `(time, new state)`.
    fn transitions(trace: &[TracePoint]) -> Vec<(u64, State)> {
        let mut out: Vec<(u64, State)> = Vec::new();
        for p in trace {
            if out.last().is_none_or(|(_, s)| *s != p.state) {
                out.push((p.at, p.state));
            }
        }
        out
    }

    /// Runs `sim` in 1 ms steps until `done` holds for flow 0 (at most `limit`).
    fn run_until_state(sim: &mut Sim, limit: Duration, done: impl Fn(&Core) -> bool) {
        let mut t = Duration::from_nanos(sim.now);
        while !done(&sim.flows[0].cc.core) {
            assert!(t < limit, "condition not reached by {limit:?}");
            t += ms(1);
            sim.run_until(t);
        }
    }

    #[test]
    fn probe_rtt_when_min_rtt_is_not_refreshed_for_five_seconds() {
        // A bulk flow in steady state sees no RTT below its first minimum (the model's
        // delays are exact), so the ProbeRTT filter is never refreshed by a lower sample.
        let path = Path::new(20.0, 40, 2.0, 0.0);
        let sim = single_flow(path, 20, LossReport::PerBatch);
        let trace = &sim.flows[0].trace;
        let changes = transitions(trace);
        println!("state changes: {changes:?}");
        let entries: Vec<usize> = (1..trace.len())
            .filter(|&i| trace[i].state == State::ProbeRtt && trace[i - 1].state != State::ProbeRtt)
            .collect();
        assert!(entries.len() >= 3, "{changes:?}");
        for &i in &entries {
            let before = &trace[i - 1];
            let entry = &trace[i];
            let stale = sim.instant(entry.at) - before.probe_rtt_min_stamp;
            // Entered on the first ACK after the filter went 5 s without a refresh.
            assert!(stale > PROBE_RTT_INTERVAL, "{stale:?}");
            assert!(stale < PROBE_RTT_INTERVAL + ms(5), "{stale:?}");
            // It lasts at least 200 ms (plus the drain to the ProbeRTT window), holding
            // the window at half a BDP (50 kB here).
            let exit = trace[i..]
                .iter()
                .find(|p| p.state != State::ProbeRtt)
                .unwrap();
            let held = Duration::from_nanos(exit.at - entry.at);
            assert!(held > PROBE_RTT_DURATION && held < ms(400), "{held:?}");
            assert_eq!(exit.state, State::ProbeBwCruise);
            let bdp = path.rate * entry.min_rtt.unwrap().as_secs_f64();
            for p in trace[i..].iter().take_while(|p| p.state == State::ProbeRtt) {
                assert!(
                    p.cwnd as f64 <= (0.5 * bdp).max(4.0 * 1200.0) + 1.0,
                    "{p:?}"
                );
            }
        }
        // The next ProbeRTT is scheduled 5 s after the last one ended.
        let gaps: Vec<u64> = entries
            .windows(2)
            .map(|w| trace[w[1]].at - trace[w[0]].at)
            .collect();
        assert!(
            gaps.iter()
                .all(|g| *g > 5_200_000_000 && *g < 5_400_000_000),
            "{gaps:?}"
        );
    }

    #[test]
    fn loss_above_two_percent_in_a_round_lowers_inflight_longterm() {
        let path = Path::new(20.0, 40, 2.0, 0.0);
        let t0 = Instant::now();
        let mut sim = Sim::new(path, t0);
        sim.add_flow(Flow::new(
            Bbr::with_seed(t0, MSS, 1),
            Duration::ZERO,
            LossReport::PerBatch,
        ));
        // Into ProbeBW_UP, a few rounds in, with probe samples.
        run_until_state(&mut sim, Duration::from_secs(10), |c| {
            c.state == State::ProbeBwUp && c.is_bw_probe_sample && c.round_count > 0
        });
        let t = sim.now + 60_000_000;
        sim.run_until(Duration::from_nanos(t));
        let cc = &sim.flows[0].cc;
        assert_eq!(
            cc.core.state,
            State::ProbeBwUp,
            "{:?}",
            transitions(&sim.flows[0].trace)
        );
        assert_eq!(cc.core.inflight_longterm, u64::MAX);
        let now = sim.instant(sim.now);
        let p = *cc.records.back().unwrap();

        // 1% of what was in flight lost: below the threshold, nothing changes.
        let mut low = cc.clone();
        let lost = (0.01 * p.tx_in_flight as f64) as u64;
        low.on_congestion_event(&loss(now, p.send_time, lost));
        assert_eq!(low.core.inflight_longterm, u64::MAX);
        assert_eq!(low.core.state, State::ProbeBwUp);
        assert!(low.core.is_loss_in_round);

        // 3%: inflight_longterm falls to the inflight at which loss crossed 2% (but not
        // below 0.7 * target inflight), and the probe ends.
        let mut high = cc.clone();
        let lost = (0.03 * p.tx_in_flight as f64) as u64;
        high.on_congestion_event(&loss(now, p.send_time, lost));
        let rs = RateSample {
            tx_in_flight: p.tx_in_flight,
            lost,
            ..RateSample::default()
        };
        let at_loss = inflight_at_loss(&rs, lost.min(p.bytes));
        let floor = (cc.core.target_inflight() as f64 * BETA) as u64;
        assert_eq!(high.core.inflight_longterm, at_loss.max(floor));
        assert!(high.core.inflight_longterm < p.tx_in_flight);
        assert_eq!(high.core.state, State::ProbeBwDown);
        assert!(high.core.prev_probe_too_high);
        assert_eq!(high.core.undo_state, Some(State::ProbeBwUp));
        // The window follows the new bound on the next ACK.
        let sent = p.send_time;
        high.on_ack(&ack(now + ms(1), sent, 2_400, path.base_rtt));
        assert!(high.window() <= high.core.inflight_longterm.max(4 * MSS_BYTES));

        // On a path whose buffer is a tenth of a BDP the probes themselves overflow it:
        // the bound ends up finite and near the path's capacity (BDP + buffer).
        let path = Path::new(20.0, 40, 0.1, 0.0);
        let sim = single_flow(path, 20, LossReport::PerBatch);
        let c = &sim.flows[0].cc.core;
        let bdp = path.rate * 0.040;
        println!(
            "shallow buffer: inflight_longterm {} bytes, BDP {bdp:.0}, overflow drops {}",
            c.inflight_longterm, sim.overflow_drops
        );
        assert!(
            c.inflight_longterm < (1.5 * bdp) as u64,
            "{}",
            c.inflight_longterm
        );
        let share =
            sim.flows[0].goodput(Duration::from_secs(10), Duration::from_secs(20)) / path.rate;
        println!("shallow buffer: delivered share {:.1}%", 100.0 * share);
        assert!(share > 0.8, "{share}");
    }

    #[test]
    fn app_limited_samples_do_not_lower_the_bandwidth_estimate() {
        let path = Path::new(20.0, 40, 2.0, 0.0);
        let t0 = Instant::now();
        let mut sim = Sim::new(path, t0);
        let mut flow = Flow::new(
            Bbr::with_seed(t0, MSS, 1),
            Duration::ZERO,
            LossReport::PerBatch,
        );
        // From 4 s to 10 s the application offers only a tenth of the link rate.
        flow.app = Some(AppLimit {
            from: 4_000_000_000,
            until: 10_000_000_000,
            rate: path.rate / 10.0,
        });
        sim.add_flow(flow);
        sim.run_until(Duration::from_secs(4));
        let before = sim.flows[0].cc.core.max_bw;
        assert!((before - path.rate).abs() / path.rate < 0.1, "{before}");
        sim.run_until(Duration::from_secs(14));
        let flow = &sim.flows[0];
        // The application's rate is what got through.
        let limited = flow.goodput(Duration::from_secs(5), Duration::from_secs(10));
        assert!(
            (limited / (path.rate / 10.0) - 1.0).abs() < 0.05,
            "{limited}"
        );
        for p in flow
            .trace
            .iter()
            .filter(|p| p.at >= 4_000_000_000 && p.at < 10_200_000_000)
        {
            assert_eq!(p.max_bw, before, "{p:?}");
            assert_eq!(p.bw, before, "{p:?}");
        }
        // Afterwards the flow fills the link again at once.
        let after = flow.goodput(Duration::from_secs(11), Duration::from_secs(14)) / path.rate;
        assert!(after > 0.9, "{after}");
    }

    #[test]
    fn per_packet_and_per_batch_loss_reports_react_identically() {
        // A shallow buffer and random loss: many detection passes find several packets.
        let path = Path::new(20.0, 40, 0.5, 0.01);
        let t0 = Instant::now();
        let per_packet = single_flow_from(t0, path, 15, LossReport::PerPacket);
        let per_batch = single_flow_from(t0, path, 15, LossReport::PerBatch);
        let (a, b) = (&per_packet.flows[0], &per_batch.flows[0]);
        println!(
            "{} packets lost, {} detection passes with several losses",
            a.lost_packets, a.multi_packet_loss_passes
        );
        assert!(a.multi_packet_loss_passes > 10);
        assert_eq!(a.trace.len(), b.trace.len());
        assert!(a.trace == b.trace, "traces differ");
        assert_eq!(a.acked_log, b.acked_log);
        assert_eq!(format!("{:?}", a.cc.core), format!("{:?}", b.cc.core));

        // The same directly: three events of one pass, or one merged event.
        let mut one = Bbr::with_seed(t0, MSS, 5);
        for i in 0..20u64 {
            one.on_packet_sent(t0 + ms(i), 1_200, false);
        }
        one.on_ack(&ack(t0 + ms(60), t0 + ms(10), 6_000, ms(40)));
        let mut three = one.clone();
        let now = t0 + ms(61);
        for i in 0..3u64 {
            three.on_congestion_event(&loss(now, t0 + ms(2 + i), 1_200));
        }
        one.on_congestion_event(&loss(now, t0 + ms(4), 3_600));
        assert_eq!(format!("{:?}", one.core), format!("{:?}", three.core));
        assert_eq!(one.core.lost, 3_600);
        // A discarded packet (a lost MTU probe) in the middle of the pass does not split it.
        let mut split = one.clone();
        let mut whole = one.clone();
        split.on_congestion_event(&loss(now + ms(1), t0 + ms(5), 1_200));
        split.on_packet_discarded(1_200);
        split.on_congestion_event(&loss(now + ms(1), t0 + ms(6), 1_200));
        whole.on_packet_discarded(1_200);
        whole.on_congestion_event(&loss(now + ms(1), t0 + ms(6), 2_400));
        assert_eq!(format!("{:?}", split.core), format!("{:?}", whole.core));
        // Events of another pass are not merged.
        three.on_congestion_event(&loss(now + ms(1), t0 + ms(5), 1_200));
        assert_eq!(three.core.lost, 4_800);
    }

    /// Jain's fairness index of `rates`.
    fn jain(rates: &[f64]) -> f64 {
        let sum: f64 = rates.iter().sum();
        let squares: f64 = rates.iter().map(|r| r * r).sum();
        sum * sum / (rates.len() as f64 * squares)
    }

    /// Two BBR flows on the 50 Mbit/s, 40 ms, one-BDP path of emulator seed `seed`, the
    /// second started `offset` after the first, each sending only while `min_room` of its
    /// window is free; simulated for `seconds`.
    fn two_flows(seed: u64, offset: Duration, min_room: u64, seconds: u64) -> Sim {
        let path = Path {
            seed,
            ..Path::new(50.0, 40, 1.0, 0.0)
        };
        let t0 = Instant::now();
        let mut sim = Sim::new(path, t0);
        for (i, start) in [Duration::ZERO, offset].into_iter().enumerate() {
            let cc = Bbr::with_seed(t0, MSS, 100 * seed + i as u64);
            let mut flow = Flow::new(cc, start, LossReport::PerBatch);
            flow.min_room = min_room;
            sim.add_flow(flow);
        }
        sim.run_until(Duration::from_secs(seconds));
        sim
    }

    /// Each flow's goodput over `[from, until)` seconds, bytes per second.
    fn goodputs(sim: &Sim, from: u64, until: u64) -> Vec<f64> {
        let (from, until) = (Duration::from_secs(from), Duration::from_secs(until));
        sim.flows.iter().map(|f| f.goodput(from, until)).collect()
    }

    /// Jain's index and total share of two flows on 50 Mbit/s, 40 ms, a one-BDP buffer,
    /// the second starting `offset` later, over 20..40 s; one entry per seed pair.
    fn fairness(offset: u64, seeds: std::ops::RangeInclusive<u64>) -> Vec<(f64, f64)> {
        seeds
            .map(|seed| {
                let sim = two_flows(seed, Duration::from_secs(offset), MSS_BYTES, 40);
                let rates = goodputs(&sim, 20, 40);
                (jain(&rates), rates.iter().sum::<f64>() / sim.path.rate)
            })
            .collect()
    }

    #[test]
    fn two_flows_share_the_bottleneck_fairly() {
        // The second flow starts 2 s after the first; six seed pairs.
        let runs = fairness(2, 1..=6);
        let mean = runs.iter().map(|r| r.0).sum::<f64>() / runs.len() as f64;
        let min = runs.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
        println!("two flows, 50 Mbit/s, 40 ms, 2 s apart: (Jain, total share) {runs:.4?}");
        println!("Jain's index mean {mean:.4}, min {min:.4}");
        assert!(mean >= 0.9, "mean Jain's index {mean}");
        assert!(runs.iter().all(|r| r.1 > 0.9), "{runs:?}");
    }

    #[test]
    fn persistent_congestion_collapses_the_window() {
        let t0 = Instant::now();
        let mut cc = Bbr::with_seed(t0, MSS, 1);
        for i in 0..10u64 {
            cc.on_packet_sent(t0 + ms(i), 1_200, false);
        }
        cc.on_ack(&ack(t0 + ms(50), t0 + ms(9), 2_400, ms(40)));
        assert!(cc.window() > 12_000);
        cc.on_congestion_event(&CongestionEvent {
            persistent: true,
            ..loss(t0 + ms(900), t0 + ms(9), 9_600)
        });
        assert_eq!(cc.metrics().bytes_in_flight, 0);
        assert_eq!(cc.window(), 4 * MSS_BYTES);
        assert!(cc.core.in_recovery);
        // The first ACK of a packet sent after the episode began restores the window saved
        // on entering it; the model then bounds it.
        cc.on_packet_sent(t0 + ms(901), 1_200, false);
        cc.on_ack(&ack(t0 + ms(941), t0 + ms(901), 1_200, ms(40)));
        assert!(!cc.core.in_recovery);
        assert!(cc.window() >= cc.core.prior_cwnd.min(cc.core.max_inflight));
    }

    #[test]
    fn bookkeeping_mtu_and_clone() {
        let t0 = Instant::now();
        let mut cc = Bbr::with_seed(t0, MSS, 1);
        for i in 0..10u64 {
            cc.on_packet_sent(t0 + ms(i), 1_200, false);
        }
        assert_eq!(cc.metrics().bytes_in_flight, 12_000);
        assert_eq!(cc.records.len(), 10);
        // Sends at the same instant (a GSO batch) share one record.
        cc.on_packet_sent(t0 + ms(9), 1_200, false);
        assert_eq!(cc.records.len(), 10);
        assert_eq!(cc.records.back().unwrap().bytes, 2_400);
        cc.on_ack(&ack(t0 + ms(50), t0 + ms(3), 4_800, ms(40)));
        assert_eq!(cc.metrics().bytes_in_flight, 8_400);
        cc.on_congestion_event(&loss(t0 + ms(51), t0 + ms(1), 1_200));
        assert_eq!(cc.metrics().bytes_in_flight, 7_200);
        cc.on_packet_discarded(2_400);
        assert_eq!(cc.metrics().bytes_in_flight, 4_800);
        cc.on_packet_discarded(100_000);
        assert_eq!(cc.metrics().bytes_in_flight, 0);
        cc.on_ack_batch_end(t0 + ms(52), Some(3_600));
        assert_eq!(cc.metrics().bytes_in_flight, 3_600);
        cc.on_ack_batch_end(t0 + ms(52), None);
        assert_eq!(cc.metrics().bytes_in_flight, 3_600);
        let boxed = cc.clone_box();
        assert_eq!(boxed.metrics(), cc.metrics());
        assert_eq!(boxed.pacing_rate(), cc.pacing_rate());
        // A larger datagram raises the window floor to four of them.
        cc.core.cwnd = 4_800;
        cc.on_mtu_update(1_500);
        assert_eq!(cc.window(), 6_000);
        // A send clock that steps back is clamped to keep the records ordered.
        let last = cc.records.back().unwrap().send_time;
        cc.on_packet_sent(t0, 1_200, false);
        assert_eq!(cc.records.back().unwrap().send_time, last);
    }

    #[test]
    fn restart_from_idle_paces_at_the_estimated_bandwidth() {
        let path = Path::new(20.0, 40, 2.0, 0.0);
        let t0 = Instant::now();
        let mut sim = Sim::new(path, t0);
        let mut flow = Flow::new(
            Bbr::with_seed(t0, MSS, 1),
            Duration::ZERO,
            LossReport::PerBatch,
        );
        // The application stops sending at 3 s.
        flow.app = Some(AppLimit {
            from: 3_000_000_000,
            until: 100_000_000_000,
            rate: 0.0,
        });
        sim.add_flow(flow);
        // Everything sent before 3 s is acknowledged by 4 s.
        sim.run_until(Duration::from_secs(4));
        let cc = &mut sim.flows[0].cc;
        assert_eq!(cc.metrics().bytes_in_flight, 0);
        assert!(cc.core.state.is_probe_bw(), "{:?}", cc.core.state);
        assert!(!cc.core.idle_restart);
        let bw = cc.core.bw;
        cc.on_packet_sent(sim.t0 + Duration::from_secs(5), 1_200, false);
        assert!(cc.core.idle_restart);
        assert_ne!(cc.core.app_limited, 0);
        assert!(cc.records.back().unwrap().app_limited);
        assert_eq!(cc.pacing_rate(), Some((bw * 0.99) as u64));
        // Its ACK is an application-limited sample: a low rate does not lower max_bw.
        let max_bw = cc.core.max_bw;
        let t = sim.t0 + Duration::from_secs(5);
        cc.on_ack(&ack(t + ms(41), t, 1_200, ms(41)));
        assert_eq!(cc.core.max_bw, max_bw);
        assert!(!cc.core.idle_restart);
    }

    #[test]
    fn startup_exits_on_high_loss_in_a_shallow_buffer() {
        // A buffer of a tenth of a BDP overflows long before the bandwidth plateaus.
        let path = Path::new(20.0, 40, 0.1, 0.0);
        let sim = single_flow(path, 3, LossReport::PerBatch);
        let flow = &sim.flows[0];
        let drain = flow
            .trace
            .iter()
            .position(|p| p.state != State::Startup)
            .unwrap();
        let at_exit = &flow.trace[drain];
        println!("{:?}", transitions(&flow.trace));
        assert_eq!(at_exit.state, State::Drain);
        // Only the high-loss exit sets inflight_longterm in Startup: max(BDP,
        // inflight_latest), near the path's capacity (BDP + buffer = 110 kB).
        assert_ne!(at_exit.inflight_longterm, u64::MAX);
        let bdp = path.rate * path.base_rtt.as_secs_f64();
        assert!(at_exit.inflight_longterm as f64 >= 0.9 * bdp);
        assert!((at_exit.inflight_longterm as f64) < 2.0 * bdp);
        assert!(flow.lost_packets >= STARTUP_FULL_LOSS_COUNT);
    }

    #[test]
    fn engines_reporting_styles_agree() {
        // quinn style (one on_ack per packet, one loss event per pass, in-flight count at
        // batch end) against s2n-quic style (one on_ack per frame, one loss event per
        // packet, no count): both estimate the bandwidth and fill the lossy path.
        let path = Path::new(50.0, 40, 1.0, 0.01);
        let mut shares = Vec::new();
        for (ack_report, loss_report) in [
            (AckReport::PerPacket, LossReport::PerBatch),
            (AckReport::PerFrame, LossReport::PerPacket),
        ] {
            let t0 = Instant::now();
            let mut sim = Sim::new(path, t0);
            let mut flow = Flow::new(Bbr::with_seed(t0, MSS, 1), Duration::ZERO, loss_report);
            flow.ack_report = ack_report;
            sim.add_flow(flow);
            sim.run_until(Duration::from_secs(30));
            let flow = &sim.flows[0];
            let error = (flow.cc.core.max_bw - path.rate).abs() / path.rate;
            let share = flow.goodput(Duration::from_secs(20), Duration::from_secs(30)) / path.rate;
            println!(
                "{ack_report:?} ACKs, {loss_report:?} losses: max_bw error {:.1}%, \
                 delivered {:.1}%",
                100.0 * error,
                100.0 * share
            );
            assert!(error < 0.1, "{error}");
            shares.push(share);
        }
        assert!(shares.iter().all(|s| *s > 0.75), "{shares:?}");
        assert!((shares[0] - shares[1]).abs() < 0.1, "{shares:?}");
    }

    #[test]
    fn min_rtt_follows_a_longer_path_within_the_filter_window() {
        // One packet per 10 ms, acknowledged after 40 ms for a second, then after 80 ms
        // (a route change): min_rtt holds the old value for its 10 s window, then takes
        // the new one.
        let t0 = Instant::now();
        let mut cc = Bbr::with_seed(t0, MSS, 1);
        let mut pending: VecDeque<(Instant, Instant)> = VecDeque::new();
        let mut min_rtt_at = Vec::new();
        for i in 0..1_300u64 {
            let now = t0 + ms(10 * i);
            while pending.front().is_some_and(|(_, at)| *at <= now) {
                let (sent, at) = pending.pop_front().unwrap();
                cc.on_ack(&ack(at, sent, 1_200, at - sent));
            }
            cc.on_packet_sent(now, 1_200, false);
            let rtt = if i < 100 { ms(40) } else { ms(80) };
            pending.push_back((now, now + rtt));
            min_rtt_at.push(cc.core.min_rtt);
        }
        // The window runs from when the minimum was first measured (0.04 s).
        assert_eq!(min_rtt_at[500], Some(ms(40)));
        assert_eq!(min_rtt_at[995], Some(ms(40)));
        assert_eq!(min_rtt_at[1_010], Some(ms(80)));
        assert_eq!(min_rtt_at[1_299], Some(ms(80)));
    }

    /// Jain's index of two flows for start offsets of 0, 2 and 5 s (prints only:
    /// `cargo test -p stoq-core fairness_sweep -- --ignored --nocapture`).
    #[test]
    #[ignore = "a sweep that prints figures"]
    fn fairness_sweep() {
        for offset in [0, 2, 5] {
            let runs = fairness(offset, 1..=6);
            let mean = runs.iter().map(|r| r.0).sum::<f64>() / runs.len() as f64;
            let min = runs.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
            println!("second flow after {offset} s: Jain's index mean {mean:.4}, min {min:.4}");
        }
    }

    /// Jain's index of two flows, the second started 1 s after the first (the emulated
    /// benchmark's stagger), over three windows, for seeds `seeds`; simulated for 60 s.
    fn late_flow_windows(seeds: std::ops::RangeInclusive<u64>, min_room: u64) -> Vec<[f64; 3]> {
        seeds
            .map(|seed| {
                let sim = two_flows(seed, Duration::from_secs(1), min_room, 60);
                [(4, 12), (10, 40), (30, 60)]
                    .map(|(from, until)| jain(&goodputs(&sim, from, until)))
            })
            .collect()
    }

    /// Asserts the late flow of [`late_flow_windows`] reaches a fair share over 30-60 s.
    fn assert_late_flow_converges(min_room: u64) {
        let runs = late_flow_windows(1..=12, min_room);
        let mut steady: Vec<f64> = runs.iter().map(|r| r[2]).collect();
        steady.sort_by(f64::total_cmp);
        let median = (steady[5] + steady[6]) / 2.0;
        println!("Jain over 4-12 s, 10-40 s, 30-60 s: {runs:.3?}; median over 30-60 s {median:.3}");
        assert!(median >= 0.95, "median {median}, {steady:?}");
        assert!(steady[0] >= 0.85, "{steady:?}");
    }

    #[test]
    fn a_flow_started_a_second_later_converges_to_a_fair_share() {
        // The late flow leaves Startup with a small estimate (its window, 2 x its BDP at a
        // min_rtt measured before the queue filled, grows too little per round at the
        // queued RTT), and each ProbeBW_UP moves only a few kB of inflight_longterm to it:
        // the shares converge over tens of seconds, not within the first few. Over 30-60 s
        // they must be fair.
        assert_late_flow_converges(MSS_BYTES);
    }

    #[test]
    fn a_late_flow_converges_when_the_engine_leaves_two_datagrams_of_the_window_free() {
        // An engine that stops sending with up to two datagrams of the window free (as
        // paced quinn connections were traced doing). When that did not count as
        // window-limited, ProbeBW_UP never raised inflight_longterm, and a late flow that
        // left Startup on loss stayed at its first estimate for the whole run (median
        // 0.726 over 30-60 s).
        assert_late_flow_converges(2 * MSS_BYTES + 1);
    }

    #[test]
    fn gso_batches_are_one_aggregate() {
        // quinn reports one on_packet_sent per GSO batch: up to 10 datagrams here, sent at
        // one instant. The estimate and the link use are unaffected.
        let path = Path::new(50.0, 40, 1.0, 0.0);
        let t0 = Instant::now();
        let mut sim = Sim::new(path, t0);
        let mut flow = Flow::new(
            Bbr::with_seed(t0, MSS, 1),
            Duration::ZERO,
            LossReport::PerBatch,
        );
        flow.gso = 10;
        sim.add_flow(flow);
        sim.run_until(Duration::from_secs(20));
        let flow = &sim.flows[0];
        let error = (flow.cc.core.max_bw - path.rate).abs() / path.rate;
        let share = flow.goodput(Duration::from_secs(5), Duration::from_secs(20)) / path.rate;
        let (mean, max) = sim.queue_delay(Duration::from_secs(5), Duration::from_secs(20));
        println!(
            "GSO 10: max_bw error {:.2}%, delivered {:.1}%, queue delay mean {mean:?} \
             max {max:?}",
            100.0 * error,
            100.0 * share
        );
        assert!(error < 0.1, "{error}");
        assert!(share > 0.9, "{share}");
        assert!(max < path.base_rtt, "{max:?}");
        // Fewer records than datagrams: sends of one instant share one.
        assert!(flow.cc.records.len() as u64 * MSS_BYTES < flow.cc.core.inflight * 2);
    }

    #[test]
    fn ecn_ce_lowers_the_short_term_bounds_but_not_inflight_longterm() {
        let path = Path::new(20.0, 40, 2.0, 0.0);
        let t0 = Instant::now();
        let mut sim = Sim::new(path, t0);
        sim.add_flow(Flow::new(
            Bbr::with_seed(t0, MSS, 1),
            Duration::ZERO,
            LossReport::PerBatch,
        ));
        run_until_state(&mut sim, Duration::from_secs(10), |c| {
            c.state == State::ProbeBwCruise && c.round_count > 20
        });
        let now = sim.instant(sim.now);
        let cc = &mut sim.flows[0].cc;
        assert!(cc.core.bw_shortterm.is_infinite());
        let longterm = cc.core.inflight_longterm;
        let sent = cc.records.back().unwrap().send_time;
        cc.on_congestion_event(&CongestionEvent {
            ecn: true,
            ..loss(now, sent, 0)
        });
        assert!(cc.core.is_loss_in_round);
        assert!(cc.core.in_recovery);
        assert_eq!(cc.core.lost, 0);
        // At the end of the round the short-term model takes the latest delivery signals.
        let t = sim.now + 100_000_000;
        sim.run_until(Duration::from_nanos(t));
        let c = &sim.flows[0].cc.core;
        assert_eq!(c.state, State::ProbeBwCruise);
        assert!(c.bw_shortterm.is_finite());
        assert!(c.bw_shortterm <= c.max_bw);
        assert!(c.inflight_shortterm < u64::MAX);
        assert_eq!(c.inflight_longterm, longterm);
    }

    #[test]
    fn acks_without_send_records_still_grow_the_window() {
        // An engine that never reports some sends: no rate sample, but no panic. Without a
        // bandwidth estimate max_inflight is only its floor, so Startup grows the window
        // by the acknowledged bytes while less than the initial window has been
        // delivered (section 5.6.4.6): nine of the ten ACKs.
        let t0 = Instant::now();
        let mut cc = Bbr::with_seed(t0, MSS, 1);
        for i in 0..10u64 {
            let sent = t0 + ms(i);
            cc.on_ack(&ack(sent + ms(40), sent, 1_200, ms(40)));
        }
        assert_eq!(cc.window(), 12_000 + 9 * 1_200);
        assert_eq!(cc.core.max_bw, 0.0);
        assert_eq!(cc.core.round_count, 0);
        cc.on_congestion_event(&loss(t0 + ms(60), t0 + ms(5), 1_200));
        assert!(cc.core.is_loss_in_round);
        assert!(cc.window() >= 4 * MSS_BYTES);
    }

    #[test]
    fn max_bw_follows_bandwidth_changes_within_two_cycles() {
        // Appendix A.16: 50 Mbit/s falls to 5 Mbit/s at 10 s (into a buffer sized for the
        // old rate: 400 ms of queue at the new one). max_bw remembers the old rate for the
        // current and the previous ProbeBW cycle, then forgets it.
        let mut path = Path::new(50.0, 40, 1.0, 0.0);
        let low = 5e6 / 8.0;
        path.rate_change = Some((10_000_000_000, low));
        let sim = single_flow(path, 30, LossReport::PerBatch);
        let flow = &sim.flows[0];
        let at = |secs: f64| {
            flow.trace
                .iter()
                .rfind(|p| p.at as f64 <= secs * 1e9)
                .unwrap()
        };
        assert!((at(9.9).max_bw - path.rate).abs() / path.rate < 0.1);
        // Still remembered at once after the drop.
        assert!(at(10.5).max_bw > 0.9 * path.rate);
        // Forgotten after at most two more cycles (each 2 to 3 s, plus ProbeRTT).
        let adapted = flow
            .trace
            .iter()
            .find(|p| p.at > 10_000_000_000 && (p.max_bw - low).abs() / low < 0.1)
            .map(|p| p.at)
            .unwrap();
        println!(
            "max_bw adapted to the 10x lower rate after {:.2} s",
            (adapted as f64 - 1e10) / 1e9
        );
        // The filter advances once per cycle, at the first round after UP ends, unless
        // that round's sample is application-limited, as it is right after ProbeRTT
        // (HandleProbeRTT() marks the connection application-limited). Here one advance
        // was skipped that way, so the old rate is gone after the second bandwidth probe
        // that followed the drop: at most two ProbeBW_UP episodes in between.
        let probes = transitions(&flow.trace)
            .iter()
            .filter(|(t, st)| *t > 10_000_000_000 && *t < adapted && *st == State::ProbeBwUp)
            .count();
        assert!(
            (1..=2).contains(&probes),
            "{probes} probes before {adapted}"
        );
        assert!(adapted < 22_000_000_000, "{adapted}");
        assert!((at(30.0).max_bw - low).abs() / low < 0.1, "{:?}", at(30.0));
        let share = flow.goodput(Duration::from_secs(20), Duration::from_secs(30)) / low;
        assert!(share > 0.9, "{share}");

        // Appendix A.15: 5 Mbit/s rises to 50 Mbit/s at 10 s; the next bandwidth probe
        // finds it (UP grows inflight_longterm exponentially) within a few seconds.
        let mut path = Path::new(5.0, 40, 1.0, 0.0);
        let high = 50e6 / 8.0;
        path.rate_change = Some((10_000_000_000, high));
        let sim = single_flow(path, 30, LossReport::PerBatch);
        let flow = &sim.flows[0];
        let found = flow
            .trace
            .iter()
            .find(|p| p.at > 10_000_000_000 && (p.max_bw - high).abs() / high < 0.1)
            .map(|p| p.at)
            .unwrap();
        println!(
            "max_bw found the 10x higher rate after {:.2} s",
            (found as f64 - 1e10) / 1e9
        );
        assert!(found < 15_000_000_000, "{found}");
        let share = flow.goodput(Duration::from_secs(20), Duration::from_secs(30)) / high;
        assert!(share > 0.9, "{share}");
    }

    #[test]
    fn idle_restart_skips_probe_rtt() {
        // Appendix A.11: idle for longer than ProbeRTTInterval; the restart does not enter
        // ProbeRTT (idleness drained the queue) and refreshes the ProbeRTT filter instead.
        let path = Path::new(20.0, 40, 2.0, 0.0);
        let t0 = Instant::now();
        let mut sim = Sim::new(path, t0);
        let mut flow = Flow::new(
            Bbr::with_seed(t0, MSS, 1),
            Duration::ZERO,
            LossReport::PerBatch,
        );
        flow.app = Some(AppLimit {
            from: 3_000_000_000,
            until: 100_000_000_000,
            rate: 0.0,
        });
        sim.add_flow(flow);
        sim.run_until(Duration::from_secs(4));
        let cc = &mut sim.flows[0].cc;
        assert_eq!(cc.metrics().bytes_in_flight, 0);
        let stamp = cc.core.probe_rtt_min_stamp;
        let t = t0 + Duration::from_secs(10);
        assert!(t > stamp + PROBE_RTT_INTERVAL);
        cc.on_packet_sent(t, 1_200, false);
        assert!(cc.core.idle_restart);
        cc.on_ack(&ack(t + ms(41), t, 1_200, ms(41)));
        assert_ne!(cc.core.state, State::ProbeRtt);
        assert_eq!(cc.core.probe_rtt_min_stamp, t + ms(41));
        assert!(!cc.core.idle_restart);
    }

    /// What BBR looks like under an engine that ignores `pacing_rate()` and paces from the
    /// window (quinn-proto: 1.25 * window / srtt), against the controller's own pacing
    /// (prints only: `cargo test -p stoq-core window_pacing -- --ignored --nocapture`).
    #[test]
    #[ignore = "a comparison that prints figures"]
    fn window_pacing_comparison() {
        for loss in [0.0, 0.01] {
            for window_pacing in [false, true] {
                let path = Path::new(50.0, 40, 1.0, loss);
                let t0 = Instant::now();
                let mut sim = Sim::new(path, t0);
                let mut flow = Flow::new(
                    Bbr::with_seed(t0, MSS, 1),
                    Duration::ZERO,
                    LossReport::PerBatch,
                );
                flow.window_pacing = window_pacing;
                sim.add_flow(flow);
                sim.run_until(Duration::from_secs(30));
                let (from, until) = (Duration::from_secs(10), Duration::from_secs(30));
                let share = sim.flows[0].goodput(from, until) / path.rate;
                let (mean, max) = sim.queue_delay(from, until);
                println!(
                    "loss {loss}, {}: delivered {:.1}%, queue delay mean {mean:.1?} max \
                     {max:.1?}, {} overflow drops",
                    if window_pacing {
                        "window pacing"
                    } else {
                        "BBR pacing"
                    },
                    100.0 * share,
                    sim.overflow_drops
                );
            }
        }
    }
}
