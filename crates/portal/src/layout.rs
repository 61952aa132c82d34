//! The page shell every page shares (server-rendered with `maud`, which
//! escapes every value): a skip link, the navigation, who is signed in with
//! a sign-out form, and the main landmark. One stylesheet and one small
//! first-party script; no third-party anything.

use maud::{DOCTYPE, Markup, html};

use writeback_proto::v1::Role;

use crate::strings as s;

/// What the shell needs to know about the viewer.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// Who is signed in.
    pub principal: Option<String>,
    /// The session's CSRF token (for the sign-out form).
    pub csrf: String,
    /// Their role, which decides the pages the navigation offers.
    pub role: Option<Role>,
}

/// The pages `role` may use, as (path, label): everyone their own account;
/// the help desk and the audit log for administrators; the on-premises
/// integration page for global administrators (the control plane enforces
/// the same on every call).
pub fn nav_links(role: Option<Role>) -> Vec<(&'static str, &'static str)> {
    let mut links = vec![("/me", s::NAV_ME)];
    if matches!(role, Some(Role::PasswordAdmin | Role::GlobalAdmin)) {
        links.push(("/helpdesk", s::NAV_HELPDESK));
    }
    if role == Some(Role::GlobalAdmin) {
        links.push(("/admin", s::NAV_ADMIN));
    }
    if matches!(role, Some(Role::PasswordAdmin | Role::GlobalAdmin)) {
        links.push(("/admin/audit", s::NAV_AUDIT));
    }
    links
}

/// A whole page.
pub fn page(title: &str, viewer: &Viewer, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – " (s::PRODUCT) }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/check.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { (s::PRODUCT) }
                    nav aria-label="Main" {
                        @for (href, label) in nav_links(viewer.role) {
                            a href=(href) aria-current=[(label == title).then_some("page")] { (label) }
                        }
                    }
                    @if let Some(p) = &viewer.principal {
                        form.signout method="post" action="/signout" {
                            span { (s::SIGNED_IN_AS) " " strong { (p) } }
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button type="submit" { (s::SIGN_OUT) }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The answer to an action, in plain words: a status for success, an alert
/// otherwise.
pub fn outcome(reason: &str, message: &str, when: Option<&str>) -> Markup {
    let ok = reason == "OK";
    html! {
        div class=(if ok { "outcome ok" } else { "outcome error" })
            role=(if ok { "status" } else { "alert" }) data-reason=(reason) {
            p { (s::explain(reason, message)) }
            @if let Some(w) = when { p { strong { (w) } } }
            p.code { "Reason code: " code { (reason) } }
        }
    }
}

/// The CSRF field every form carries.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_is_offered_only_its_pages() {
        let paths = |role| {
            nav_links(role)
                .into_iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(None), ["/me"]);
        assert_eq!(paths(Some(Role::User)), ["/me"]);
        assert_eq!(
            paths(Some(Role::PasswordAdmin)),
            ["/me", "/helpdesk", "/admin/audit"]
        );
        assert_eq!(
            paths(Some(Role::GlobalAdmin)),
            ["/me", "/helpdesk", "/admin", "/admin/audit"]
        );
    }
}
