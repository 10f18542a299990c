//! Twilio's error codes, and whether trying again can help.
//!
//! Codes become `twilio:<code>` (`twilio:21610`). A code in [`TABLE`] is permanent or transient
//! as the table says; an unknown code, or an error without one, is judged by the HTTP status:
//! 429 and 5xx are transient, anything else is permanent. A `Retry-After` (seconds or an HTTP date) on the answer
//! is honoured for transient errors.
//!
//! | code  | meaning                                                        | retry? |
//! |-------|----------------------------------------------------------------|--------|
//! | 14107 | message rate limit exceeded                                    | yes    |
//! | 20003 | authentication failed (account SID, auth token or API key)     | no     |
//! | 20404 | resource not found (wrong account SID)                         | no     |
//! | 20429 | too many requests                                              | yes    |
//! | 20500 | internal server error                                          | yes    |
//! | 20503 | service unavailable                                            | yes    |
//! | 21211 | invalid `To` number                                            | no     |
//! | 21212 | invalid `From` number                                          | no     |
//! | 21408 | sending to this region is not enabled                          | no     |
//! | 21601 | `To` is not SMS-capable                                        | no     |
//! | 21602 | message body is required                                       | no     |
//! | 21603 | `From` is required                                             | no     |
//! | 21604 | `To` is required                                               | no     |
//! | 21606 | `From` is not a message-capable Twilio number                  | no     |
//! | 21608 | trial accounts send only to verified numbers                   | no     |
//! | 21610 | the recipient unsubscribed (replied STOP)                      | no     |
//! | 21611 | the `From` number has too many queued messages                 | yes    |
//! | 21612 | no route between `From` and `To`                               | no     |
//! | 21614 | `To` is not a mobile number                                    | no     |
//! | 21617 | the body is longer than 1600 characters                        | no     |
//! | 21620 | invalid media URL                                              | no     |
//! | 21621 | `From` cannot send MMS                                         | no     |
//! | 21635 | `To` is a landline                                             | no     |
//! | 21660 | `From` does not belong to the account                          | no     |
//! | 30001 | queue overflow                                                 | yes    |
//! | 30002 | account suspended                                              | no     |
//! | 30003 | unreachable destination handset                                | yes    |
//! | 30004 | message blocked                                                | no     |
//! | 30005 | unknown destination handset                                    | no     |
//! | 30006 | landline or unreachable carrier                                | no     |
//! | 30007 | filtered by the carrier                                        | no     |
//! | 30008 | unknown error                                                  | yes    |
//! | 30009 | missing segment                                                | yes    |
//! | 30010 | message price exceeds the maximum price                        | no     |
//! | 63016 | WhatsApp: outside the 24-hour window, a template is required   | no     |
//!
//! Receipts (status callbacks) keep the code the same way; a `failed` or `undelivered` receipt is
//! final whatever the table says, the table only decides whether a refused send is retried.

/// `(code, meaning, transient)`.
pub const TABLE: &[(u32, &str, bool)] = &[
    (14107, "message rate limit exceeded", true),
    (20003, "authentication failed: check the account SID and the auth token or API key", false),
    (20404, "resource not found: check the account SID", false),
    (20429, "too many requests", true),
    (20500, "Twilio internal server error", true),
    (20503, "Twilio service unavailable", true),
    (21211, "invalid 'To' phone number", false),
    (21212, "invalid 'From' phone number", false),
    (21408, "permission to send to this region is not enabled", false),
    (21601, "the 'To' number is not SMS-capable", false),
    (21602, "message body is required", false),
    (21603, "a 'From' number is required", false),
    (21604, "a 'To' number is required", false),
    (21606, "the 'From' number is not a message-capable Twilio number", false),
    (21608, "trial accounts can only send to verified numbers", false),
    (21610, "the recipient has unsubscribed (replied STOP)", false),
    (21611, "the 'From' number has too many queued messages", true),
    (21612, "cannot route a message between 'From' and 'To'", false),
    (21614, "the 'To' number is not a mobile number", false),
    (21617, "the message body exceeds 1600 characters", false),
    (21620, "invalid media URL", false),
    (21621, "the 'From' number cannot send MMS", false),
    (21635, "the 'To' number is a landline", false),
    (21660, "the 'From' number does not belong to the account", false),
    (30001, "queue overflow", true),
    (30002, "account suspended", false),
    (30003, "unreachable destination handset", true),
    (30004, "message blocked", false),
    (30005, "unknown destination handset", false),
    (30006, "landline or unreachable carrier", false),
    (30007, "message filtered by the carrier", false),
    (30008, "unknown delivery error", true),
    (30009, "missing segment", true),
    (30010, "message price exceeds the maximum price", false),
    (63016, "WhatsApp: outside the 24-hour session window, a template is required", false),
];

/// What the table knows of `code`: its meaning and whether it is transient.
pub fn lookup(code: u32) -> Option<(&'static str, bool)> {
    TABLE.iter().find(|(c, _, _)| *c == code).map(|(_, meaning, transient)| (*meaning, *transient))
}

/// Whether an error with this code (if any) and HTTP status may go away if tried again.
pub fn is_transient(code: Option<u32>, http_status: u16) -> bool {
    match code.and_then(lookup) {
        Some((_, transient)) => transient,
        None => http_status == 429 || http_status >= 500,
    }
}

/// `twilio:<code>`, or `twilio:http_<status>` without a code.
pub fn error_code(code: Option<u32>, http_status: u16) -> String {
    match code {
        Some(code) => format!("twilio:{code}"),
        None => format!("twilio:http_{http_status}"),
    }
}
