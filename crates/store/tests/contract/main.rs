//! The `Store` contract, run against both backends: every test of `both` runs once on a fresh
//! SQLite file (`sqlite::…`) and once on a fresh PostgreSQL database (`postgres::…`); the tests
//! of `postgres_only` exercise what only PostgreSQL has (several processes on one database, its
//! own schema) and run there alone.
//!
//! A PostgreSQL test creates its own database (`parley_test_<uuid>`) on the server that
//! `PARLEY_TEST_POSTGRES_URL` names, and drops it after. Without that variable the PostgreSQL
//! tests say so and pass, except on CI (`CI=true`), where they fail.
//!
//! A contract test is `pub async fn name(f: Fixture)` in one of the modules below and is listed
//! here; a PostgreSQL-only test is `pub async fn name(db: TestDb)`. A test that is written but not
//! listed is dead code, which the lints refuse.

mod analytics;
mod consent;
mod contacts;
mod conversations;
mod feed;
mod messages;
mod metrics;
mod parts;
mod pg_only;
mod queue;
mod schema;
mod support;
mod webhooks;

/// One `#[tokio::test]` per backend for every contract test, named `<backend>::<module>::<test>`.
macro_rules! contract_tests {
    (
        both { $($module:ident: [$($test:ident),* $(,)?]),* $(,)? }
        postgres_only { $($pg_module:ident: [$($pg_test:ident),* $(,)?]),* $(,)? }
    ) => {
        mod sqlite {
            $(mod $module {
                $(#[tokio::test]
                async fn $test() {
                    let Some(f) = crate::support::fixture(crate::support::Backend::Sqlite).await else { return };
                    crate::$module::$test(f).await;
                })*
            })*
        }

        mod postgres {
            $(mod $module {
                $(#[tokio::test]
                async fn $test() {
                    let Some(f) = crate::support::fixture(crate::support::Backend::Postgres).await else { return };
                    crate::$module::$test(f).await;
                })*
            })*

            $(mod $pg_module {
                $(#[tokio::test]
                async fn $pg_test() {
                    let Some(db) = crate::support::test_db().await else { return };
                    crate::$pg_module::$pg_test(db).await;
                })*
            })*
        }
    };
}

contract_tests! {
    both {
        analytics: [
            rows_of_the_window_with_first_delivery_and_replies,
        ],
        consent: [
            the_ledger_is_appended_and_listed_newest_first,
            opt_outs_in_force_are_those_no_newer_record_covers,
            the_messaging_policy_is_stored_per_workspace,
            last_inbound_and_recent_sends,
        ],
        contacts: [
            upserts_find_the_owner_and_report_what_they_did,
            erased_contacts_keep_their_identities_and_revive,
            merges_repoint_messages_and_consents,
        ],
        conversations: [
            concurrent_openers_share_one_conversation,
            inbound_joins_the_open_conversation_until_it_is_idle,
            outbound_messages_count_in_the_conversation_they_name,
            assigning_and_closing_record_activities,
        ],
        feed: [
            event_positions_resolve_in_their_workspace_only,
            messages_with_events_loads_the_workspaces_messages_with_their_timelines,
            a_message_as_of_each_event_is_what_the_store_said_then,
            workspace_events_take_their_place_in_the_feed,
        ],
        messages: [
            create_get_and_list_with_filters_and_cursor,
            tenancy_records_round_trip,
            lists_follow_creation_times,
            idempotency_replays_refuses_reuse_and_expires,
            fifty_concurrent_requests_with_one_key_create_one_message,
            a_bad_request_in_a_batch_fails_alone,
            the_feed_never_skips_an_event_committed_late,
        ],
        queue: [
            concurrent_claimers_never_get_the_same_job,
            a_lease_that_runs_out_makes_the_job_claimable_again,
            sent_then_receipts_move_forward_only,
            a_receipt_before_the_sent_outcome_is_kept_and_applied_later,
            retry_failure_and_release_outcomes,
            stale_outcomes_leave_the_error_that_ended_the_message,
            cancel_outcomes,
            claims_expire_old_messages_and_queue_scheduled_ones,
            inbound_messages_are_stored_once,
        ],
        parts: [
            receipt_details_are_kept_on_the_event,
            parts_delivered_in_any_order_deliver_the_message_once,
            a_part_undelivered_fails_the_message_once_all_parts_are_final,
            part_receipts_before_the_sent_outcome_are_applied_when_it_lands,
            a_duplicate_part_receipt_changes_nothing,
            single_part_messages_keep_no_parts,
            parts_of_old_messages_are_purged,
            concurrent_part_receipts_resolve_each_message_once,
        ],
        schema: [
            reopening_keeps_everything_and_migrates_once,
        ],
        metrics: [
            metrics_snapshot_counts_messages_and_claimable_jobs,
        ],
        webhooks: [
            endpoints_crud_and_workspace_isolation,
            leases_are_exclusive_until_they_run_out,
            concurrent_leases_never_share_an_endpoint,
            progress_is_refused_to_anyone_but_the_lease_owner,
            progress_records_attempts_retries_finished_cursor_and_failing_since,
            disabling_records_the_workspace_event_and_clears_the_lease,
            due_deliveries_are_ordered_and_limited_and_scheduling_replaces,
            attempts_are_listed_newest_first_with_a_cursor,
            old_attempts_are_purged_by_id_a_slice_at_a_time,
            backlog_counts_unhandled_events_and_retries,
            feed_events_by_id_gives_the_workspaces_events_in_feed_order,
        ],
    }
    postgres_only {
        pg_only: [
            migrations_run_once_when_processes_start_together,
            the_schema_matches_the_sqlite_one,
        ],
    }
}
