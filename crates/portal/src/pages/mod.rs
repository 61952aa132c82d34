//! The pages, one module per audience: [`selfservice`] (everyone, their own
//! account), [`helpdesk`] (password administrators), [`audit`] (the audit
//! trails, administrators) and [`admin`] (global administrators). Each handler renders with [`crate::layout`] and turns
//! the control plane's answers into plain words ([`crate::strings`]).

mod admin;
mod audit;
mod helpdesk;
mod selfservice;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use maud::html;

use crate::App;
use crate::layout::{Viewer, page};
use crate::session::{Session, SignedIn};

/// The pages a person reads (`GET`), by their routes.
const ME: &str = "/me";
const HELPDESK: &str = "/helpdesk";
const ADMIN: &str = "/admin";
const AUDIT: &str = "/admin/audit";
const OPERATION: &str = "/admin/operation";

/// The routes a sign-in may return to ([`crate::return_path`]): every page
/// a person reads, as [`routes`] routes them.
pub(crate) const RETURN_PATHS: [&str; 5] = [ME, HELPDESK, ADMIN, AUDIT, OPERATION];

/// Every page route.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(ME, get(selfservice::show))
        .route("/me/change", post(selfservice::change))
        .route("/me/reset", post(selfservice::reset))
        .route("/me/unlock", post(selfservice::unlock))
        .route(HELPDESK, get(helpdesk::show))
        .route("/helpdesk/reset", post(helpdesk::reset))
        .route("/helpdesk/unlock", post(helpdesk::unlock))
        .route(ADMIN, get(admin::show))
        .route("/admin/settings", post(admin::settings))
        .route("/admin/revoke", post(admin::revoke))
        .route("/admin/enroll", post(admin::enroll))
        .route(AUDIT, get(audit::show))
        .route(OPERATION, get(admin::operation))
        .route("/signed-out", get(signed_out))
}

/// The shell's view of a signed-in session.
pub(crate) fn viewer(s: &Session, u: &SignedIn) -> Viewer {
    Viewer {
        principal: Some(u.principal.clone()),
        csrf: s.csrf.clone(),
        role: u.role,
    }
}

async fn signed_out() -> maud::Markup {
    page(
        crate::strings::SIGN_OUT,
        &Viewer::default(),
        html! {
            p { "You are signed out." }
            a.button href="/signin?next=/me" { (crate::strings::SIGN_IN) }
        },
    )
}

/// A timestamp as people read it (UTC).
pub(crate) fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// A UPN as a `UserRef`.
pub(crate) fn upn(user: &str) -> writeback_proto::v1::UserRef {
    writeback_proto::v1::UserRef {
        by: Some(writeback_proto::v1::user_ref::By::Upn(
            user.trim().to_owned(),
        )),
    }
}
