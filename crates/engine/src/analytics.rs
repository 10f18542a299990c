//! Message analytics: what became of the outbound messages created in a window, per group.
//!
//! The store returns one narrow row per outbound message of the window
//! ([`parley_store::AnalyticsRow`]); every figure is computed here, from those rows, so that the
//! numbers are the same on SQLite and PostgreSQL by construction (no database arithmetic, no
//! database percentile functions).
//!
//! The figures of a group:
//!
//! - **States**: the messages by their state now: `delivered`, `read`, `failed`, `undelivered`,
//!   `rejected`, `expired`, `canceled`, and `in_flight` (still `accepted`, `scheduled`, `queued`,
//!   `sending` or `sent`).
//! - **Delivery rate** = (delivered + read) / (delivered + read + failed + undelivered + rejected +
//!   expired): of the messages that reached an outcome, the share that reached the handset.
//!   Canceled messages (never handed over) and messages in flight are left out.
//! - **Read rate** = read / (delivered + read), counting only messages of channels that report
//!   reads ([`parley_domain::Channel::has_read_receipts`]; not SMS).
//! - **Reply rate** = replied / messages, where a message counts as replied when an inbound
//!   message on the same channel account, from the outbound message's `to`, was created at most
//!   24 hours after it (`0 <= inbound.created_at - outbound.created_at < 24 h`).
//! - **Failure reasons**: the messages that ended `failed`, `undelivered`, `rejected` or
//!   `expired`, counted by their error code (`None` when they have none), most frequent first.
//! - **Time to delivered**: for every message with a `delivered` event, the milliseconds from its
//!   creation to its earliest `delivered` event; p50 and p95 by the nearest-rank method.
//!
//! A rate whose denominator is 0, and a percentile of no values, is `None`.

use crate::{Engine, Result};
use parley_domain::{MessageState, Millis, WorkspaceId};
use parley_store::AnalyticsRow;
use std::collections::BTreeMap;

/// The longest window a report may cover.
pub const MAX_ANALYTICS_RANGE_DAYS: i64 = 366;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// How the messages of a window are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// By channel (`sms`, `whatsapp`, …).
    Channel,
    /// By the UTC calendar day of `created_at` (`2026-11-27`).
    Day,
    /// By template name; messages without a template form the group whose key is `None`.
    Template,
    /// By channel account id.
    ChannelAccount,
}

impl GroupBy {
    pub const ALL: [GroupBy; 4] = [GroupBy::Channel, GroupBy::Day, GroupBy::Template, GroupBy::ChannelAccount];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Channel => "channel",
            GroupBy::Day => "day",
            GroupBy::Template => "template",
            GroupBy::ChannelAccount => "channel_account",
        }
    }

    pub fn parse(s: &str) -> Option<GroupBy> {
        GroupBy::ALL.into_iter().find(|g| g.as_str() == s)
    }

    fn key(self, row: &AnalyticsRow) -> Option<String> {
        match self {
            GroupBy::Channel => Some(row.channel.as_str().to_string()),
            GroupBy::Day => Some(row.created_at.to_timestamp().strftime("%Y-%m-%d").to_string()),
            GroupBy::Template => row.template.clone(),
            GroupBy::ChannelAccount => Some(row.channel_account_id.to_string()),
        }
    }
}

/// Why a window is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("to must be later than from")]
    Empty,
    #[error("the window may span at most {MAX_ANALYTICS_RANGE_DAYS} days")]
    TooLong,
}

/// Check a window `[from, to)`: not empty, at most [`MAX_ANALYTICS_RANGE_DAYS`] long.
pub fn check_window(from: Millis, to: Millis) -> Result<(), WindowError> {
    if to <= from {
        return Err(WindowError::Empty);
    }
    if to.0.saturating_sub(from.0) > MAX_ANALYTICS_RANGE_DAYS * DAY_MS {
        return Err(WindowError::TooLong);
    }
    Ok(())
}

/// Messages by their state now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub delivered: u64,
    pub read: u64,
    pub failed: u64,
    pub undelivered: u64,
    pub rejected: u64,
    pub expired: u64,
    pub canceled: u64,
    /// Not final yet: accepted, scheduled, queued, sending or sent.
    pub in_flight: u64,
}

/// Messages that ended in failure with one error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureReason {
    pub code: Option<String>,
    pub count: u64,
}

/// Milliseconds from creation to the first `delivered` event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryTimes {
    /// Messages with a `delivered` event (the values the percentiles are taken of).
    pub count: u64,
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

/// The figures of one group (see the module documentation for their definitions).
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticsGroup {
    /// The group's key; `None` for the one group of an ungrouped report and for messages without
    /// a template when grouping by template.
    pub key: Option<String>,
    /// Outbound messages in the group.
    pub messages: u64,
    pub states: StateCounts,
    /// Messages that were replied to.
    pub replied: u64,
    /// Messages of channels with read receipts that are `delivered` or `read`: the read rate's
    /// denominator.
    pub read_receipt_base: u64,
    pub delivery_rate: Option<f64>,
    pub read_rate: Option<f64>,
    pub reply_rate: Option<f64>,
    pub failure_reasons: Vec<FailureReason>,
    pub time_to_delivered: DeliveryTimes,
}

impl AnalyticsGroup {
    /// delivered + read + failed + undelivered + rejected + expired: the delivery rate's denominator.
    pub fn outcomes(&self) -> u64 {
        let s = &self.states;
        s.delivered + s.read + s.failed + s.undelivered + s.rejected + s.expired
    }
}

/// A report on the outbound messages created in `[from, to)`.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticsReport {
    pub from: Millis,
    pub to: Millis,
    pub group_by: Option<GroupBy>,
    /// Ordered by key (`None` first). Without `group_by` exactly one group (even when empty);
    /// with it, one group per key that has at least one message.
    pub groups: Vec<AnalyticsGroup>,
}

impl Engine {
    /// The report on the workspace's outbound messages created in `[from, to)` (checked with
    /// [`check_window`] by the caller).
    pub async fn message_analytics(
        &self,
        workspace: WorkspaceId,
        from: Millis,
        to: Millis,
        group_by: Option<GroupBy>,
    ) -> Result<AnalyticsReport> {
        let rows = self.store().outbound_analytics(workspace, from, to).await?;
        Ok(AnalyticsReport { from, to, group_by, groups: aggregate(&rows, group_by) })
    }
}

#[derive(Default)]
struct Tally {
    messages: u64,
    states: StateCounts,
    replied: u64,
    read_receipt_base: u64,
    read_with_receipts: u64,
    failures: BTreeMap<Option<String>, u64>,
    delivery_ms: Vec<i64>,
}

impl Tally {
    fn add(&mut self, row: &AnalyticsRow) {
        self.messages += 1;
        let s = &mut self.states;
        match row.status {
            MessageState::Delivered => s.delivered += 1,
            MessageState::Read => s.read += 1,
            MessageState::Failed => s.failed += 1,
            MessageState::Undelivered => s.undelivered += 1,
            MessageState::Rejected => s.rejected += 1,
            MessageState::Expired => s.expired += 1,
            MessageState::Canceled => s.canceled += 1,
            // `received` is inbound only; the store never returns it.
            MessageState::Accepted
            | MessageState::Scheduled
            | MessageState::Queued
            | MessageState::Sending
            | MessageState::Sent
            | MessageState::Received => s.in_flight += 1,
        }
        if row.replied {
            self.replied += 1;
        }
        if row.channel.has_read_receipts() && matches!(row.status, MessageState::Delivered | MessageState::Read) {
            self.read_receipt_base += 1;
            if row.status == MessageState::Read {
                self.read_with_receipts += 1;
            }
        }
        if row.status.is_failure() && row.status != MessageState::Canceled {
            *self.failures.entry(row.error_code.clone()).or_default() += 1;
        }
        if let Some(at) = row.first_delivered_at {
            self.delivery_ms.push(at.0 - row.created_at.0);
        }
    }

    fn finish(mut self, key: Option<String>) -> AnalyticsGroup {
        self.delivery_ms.sort_unstable();
        let mut failure_reasons: Vec<FailureReason> =
            self.failures.into_iter().map(|(code, count)| FailureReason { code, count }).collect();
        // Most frequent first; ties by code (the map's order, kept by the stable sort).
        failure_reasons.sort_by_key(|f| std::cmp::Reverse(f.count));
        let s = self.states;
        let outcomes = s.delivered + s.read + s.failed + s.undelivered + s.rejected + s.expired;
        AnalyticsGroup {
            key,
            messages: self.messages,
            states: s,
            replied: self.replied,
            read_receipt_base: self.read_receipt_base,
            delivery_rate: rate(s.delivered + s.read, outcomes),
            read_rate: rate(self.read_with_receipts, self.read_receipt_base),
            reply_rate: rate(self.replied, self.messages),
            failure_reasons,
            time_to_delivered: DeliveryTimes {
                count: self.delivery_ms.len() as u64,
                p50_ms: nearest_rank(&self.delivery_ms, 50),
                p95_ms: nearest_rank(&self.delivery_ms, 95),
            },
        }
    }
}

fn rate(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// The `p`-th percentile (0 < p <= 100) of ascending `sorted` by the nearest-rank method: the
/// value at 1-based rank ⌈p/100 × n⌉.
pub fn nearest_rank(sorted: &[i64], p: u64) -> Option<i64> {
    let n = sorted.len() as u64;
    if n == 0 {
        return None;
    }
    let rank = (p * n).div_ceil(100).clamp(1, n);
    sorted.get((rank - 1) as usize).copied()
}

/// The groups of `rows` (see [`AnalyticsReport::groups`]).
pub fn aggregate(rows: &[AnalyticsRow], group_by: Option<GroupBy>) -> Vec<AnalyticsGroup> {
    let Some(group_by) = group_by else {
        let mut all = Tally::default();
        rows.iter().for_each(|row| all.add(row));
        return vec![all.finish(None)];
    };
    let mut groups: BTreeMap<Option<String>, Tally> = BTreeMap::new();
    for row in rows {
        groups.entry(group_by.key(row)).or_default().add(row);
    }
    groups.into_iter().map(|(key, tally)| tally.finish(key)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_domain::{Channel, ChannelAccountId, MessageId};

    fn row(channel: Channel, status: MessageState, created_at: i64) -> AnalyticsRow {
        AnalyticsRow {
            id: MessageId::new(),
            channel,
            channel_account_id: ChannelAccountId::new(),
            template: None,
            status,
            error_code: None,
            created_at: Millis(created_at),
            first_delivered_at: None,
            replied: false,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[7], 50), Some(7));
        assert_eq!(nearest_rank(&[7], 95), Some(7));
        let v: Vec<i64> = (1..=20).collect();
        // ⌈0.5 × 20⌉ = 10, ⌈0.95 × 20⌉ = 19.
        assert_eq!((nearest_rank(&v, 50), nearest_rank(&v, 95)), (Some(10), Some(19)));
        let v: Vec<i64> = (1..=21).collect();
        // ⌈10.5⌉ = 11, ⌈19.95⌉ = 20.
        assert_eq!((nearest_rank(&v, 50), nearest_rank(&v, 95)), (Some(11), Some(20)));
        assert_eq!(nearest_rank(&[1, 2], 50), Some(1));
        assert_eq!(nearest_rank(&[1, 2], 95), Some(2));
    }

    #[test]
    fn rates_and_their_denominators() {
        let mut rows = vec![
            row(Channel::Sms, MessageState::Delivered, 0),
            row(Channel::Whatsapp, MessageState::Read, 0),
            row(Channel::Whatsapp, MessageState::Delivered, 0),
            row(Channel::Sms, MessageState::Failed, 0),
            row(Channel::Sms, MessageState::Canceled, 0),
            row(Channel::Sms, MessageState::Sent, 0),
        ];
        rows[0].replied = true;
        rows[0].first_delivered_at = Some(Millis(300));
        rows[1].first_delivered_at = Some(Millis(100));
        rows[3].error_code = Some("x".into());
        let g = &aggregate(&rows, None)[0];
        assert_eq!(g.messages, 6);
        assert_eq!(g.outcomes(), 4);
        assert_eq!(g.delivery_rate, Some(3.0 / 4.0));
        // SMS delivered messages are not in the read rate: 1 read of 2 WhatsApp deliveries.
        assert_eq!((g.read_rate, g.read_receipt_base), (Some(0.5), 2));
        assert_eq!(g.reply_rate, Some(1.0 / 6.0));
        assert_eq!(g.failure_reasons, vec![FailureReason { code: Some("x".into()), count: 1 }]);
        assert_eq!(g.time_to_delivered, DeliveryTimes { count: 2, p50_ms: Some(100), p95_ms: Some(300) });
        assert_eq!(g.states.in_flight, 1);
        assert_eq!(g.states.canceled, 1);

        let empty = aggregate(&[], None);
        assert_eq!(empty.len(), 1);
        assert_eq!((empty[0].delivery_rate, empty[0].read_rate, empty[0].reply_rate), (None, None, None));
        assert!(aggregate(&[], Some(GroupBy::Channel)).is_empty());
        let by_channel = aggregate(&rows, Some(GroupBy::Channel));
        assert_eq!(by_channel.iter().map(|g| g.key.as_deref()).collect::<Vec<_>>(), [Some("sms"), Some("whatsapp")]);
        assert_eq!(by_channel[0].read_rate, None, "SMS has no read receipts");
    }

    #[test]
    fn days_are_utc_calendar_days() {
        let midnight = Millis::parse_rfc3339("2026-11-28T00:00:00Z").unwrap().0;
        let rows = [
            row(Channel::Sms, MessageState::Queued, midnight - 1),
            row(Channel::Sms, MessageState::Queued, midnight),
            row(Channel::Sms, MessageState::Queued, midnight + DAY_MS - 1),
        ];
        let days = aggregate(&rows, Some(GroupBy::Day));
        let keys: Vec<_> = days.iter().map(|g| (g.key.clone().unwrap(), g.messages)).collect();
        assert_eq!(keys, [("2026-11-27".to_string(), 1), ("2026-11-28".to_string(), 2)]);
    }

    #[test]
    fn windows() {
        assert_eq!(check_window(Millis(5), Millis(5)), Err(WindowError::Empty));
        assert_eq!(check_window(Millis(6), Millis(5)), Err(WindowError::Empty));
        assert_eq!(check_window(Millis(0), Millis(366 * DAY_MS)), Ok(()));
        assert_eq!(check_window(Millis(0), Millis(366 * DAY_MS + 1)), Err(WindowError::TooLong));
        assert_eq!(GroupBy::parse("channel_account"), Some(GroupBy::ChannelAccount));
        assert_eq!(GroupBy::parse("week"), None);
    }
}
