//! Outbound webhooks: the pieces that let a workspace's endpoints receive its events. For now,
//! the SSRF guard that every endpoint URL passes when it is registered and again before each
//! delivery ([`ssrf`]); signing lives in `parley_domain::webhook`.

pub mod ssrf;

pub use ssrf::{
    AddressClass, Cidr, CidrError, MAX_URL_LEN, UrlPolicy, UrlRefused, check_syntax, classify, resolve_and_check,
};
