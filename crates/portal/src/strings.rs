//! Every sentence the portal shows, in one place so it can be translated:
//! page texts, and each reason code in plain words with the next step.

/// Product name in titles.
pub const PRODUCT: &str = "Password writeback";
/// Navigation.
pub const NAV_ME: &str = "My account";
pub const NAV_HELPDESK: &str = "Help desk";
pub const NAV_ADMIN: &str = "On-premises integration";
pub const NAV_AUDIT: &str = "Audit log";
pub const SIGN_IN: &str = "Sign in";
pub const SIGN_OUT: &str = "Sign out";
pub const SIGNED_IN_AS: &str = "Signed in as";
pub const STRONG_SIGN_IN: &str = "Sign in again with multi-factor authentication";
pub const WELCOME: &str =
    "Reset or change your on-premises password, or unlock your account, from here.";

/// Self-service.
pub const POLICY_TITLE: &str = "Your password rules";
pub const POLICY_MIN_LENGTH: &str = "At least this many characters";
pub const POLICY_COMPLEXITY: &str =
    "Mix at least 3 of: upper-case letters, lower-case letters, digits, symbols, other letters";
pub const POLICY_NO_COMPLEXITY: &str = "No character mix is required";
pub const POLICY_HISTORY: &str = "Must differ from your last passwords";
pub const POLICY_MIN_AGE: &str = "Time between two changes";
pub const POLICY_MAX_AGE: &str = "Expires after";
pub const POLICY_NEVER: &str = "never";
pub const POLICY_ACCOUNT_NAME: &str = "Must not contain your account name";
pub const CHANGE_TITLE: &str = "Change your password";
pub const CHANGE_HELP: &str = "You know your current password and want a new one.";
pub const RESET_TITLE: &str = "Reset your password";
pub const RESET_HELP: &str =
    "You forgot your password. This needs a recent sign-in with multi-factor authentication.";
pub const UNLOCK_TITLE: &str = "Unlock your account";
pub const UNLOCK_HELP: &str =
    "Too many wrong passwords locked your account. Unlocking keeps your password.";
pub const CURRENT_PASSWORD: &str = "Current password";
pub const NEW_PASSWORD: &str = "New password";
pub const CONFIRM_PASSWORD: &str = "Type the new password again";
pub const SUBMIT_CHANGE: &str = "Change password";
pub const SUBMIT_RESET: &str = "Reset password";
pub const SUBMIT_UNLOCK: &str = "Unlock account";
pub const MISMATCH: &str = "The two new passwords are not the same.";
pub const LIVE_CHECK_LABEL: &str = "Checks as you type";

/// Help desk.
pub const FIND_USER: &str = "Find a user";
pub const SEARCH_LABEL: &str = "Start of a name, account name or e-mail address";
pub const SEARCH_HINT: &str = "At least 2 characters, for example \"ali\" or \"smi\".";
pub const SUBMIT_FIND: &str = "Search";
pub const RESULTS_CAPTION: &str = "Users whose name starts with";
pub const NO_USER_FOUND: &str =
    "No user in the directory matches. Check the spelling, or try the start of another name.";
pub const MORE_RESULTS: &str = "More users match than are shown here: type more of the name.";
pub const DOMAIN_NOT_SEARCHED: &str = "Not searched:";
pub const COL_NAME: &str = "Name";
pub const COL_UPN: &str = "User name";
pub const COL_STATE: &str = "Account";
pub const COL_WRITEBACK: &str = "Password writeback";
pub const STATE_ENABLED: &str = "enabled";
pub const STATE_DISABLED: &str = "disabled";
pub const STATE_LOCKED: &str = "locked out";
pub const ELIGIBLE: &str = "can be reset and unlocked here";
pub const NOT_ELIGIBLE: &str = "not here:";
pub const OPEN_USER: &str = "Open";
pub const MUST_CHANGE: &str = "User must change the password at next sign-in";
pub const ALSO_UNLOCK: &str = "Also unlock the account";
pub const HD_RESET_TITLE: &str = "Reset the password of";
pub const HD_UNLOCK_TITLE: &str = "Unlock the account of";
pub const HISTORY: &str = "Operation history";
pub const NO_HISTORY: &str = "No operations yet.";

/// Administration.
pub const TOGGLES_TITLE: &str = "Password writeback settings";
pub const TOGGLE_CLOUD_SYNC: &str = "Password writeback in cloud sync";
pub const TOGGLE_SSPR: &str = "Write back passwords to your on-premises directory";
pub const TOGGLE_UNLOCK: &str = "Allow users to unlock accounts without resetting their password";
pub const SAVE: &str = "Save";
pub const DOMAINS_TITLE: &str = "Domains and agents";
pub const SETUP_COMPLETE: &str = "Agent set-up is complete";
pub const SETUP_INCOMPLETE: &str = "Agent set-up is not complete";
pub const AGENTS_TITLE: &str = "Agents";
pub const REVOKE: &str = "Revoke";
pub const ENROLL_TITLE: &str = "Add an agent";
pub const ENROLL_HELP: &str =
    "Issue a one-time enrollment token for a domain, then run the command on the agent's host.";
pub const ENROLL_SUBMIT: &str = "Issue enrollment token";
pub const ENROLL_SHOWN_ONCE: &str =
    "This token is shown once. Save it to a file on the agent's host (mode 0600) and run:";
pub const DOMAIN: &str = "Domain";
pub const AUDIT_TITLE: &str = "Audit log";
pub const FILTER: &str = "Filter";
pub const OPERATION_TITLE: &str = "Operation";
pub const NEXT_PAGE: &str = "Next page";
pub const AUDIT_FILTER_KIND: &str = "Trail";
pub const AUDIT_KIND_OPERATIONS: &str = "Password operations";
pub const AUDIT_KIND_ADMINISTRATION: &str = "Administrative changes";
pub const AUDIT_KIND_SECURITY: &str = "Security events";
pub const AUDIT_FILTER_PRINCIPAL: &str = "Done by (user@domain)";
pub const AUDIT_FILTER_USER: &str = "About user (user@domain)";
pub const AUDIT_FILTER_SINCE: &str = "From (UTC)";
pub const AUDIT_FILTER_UNTIL: &str = "Until, inclusive (UTC)";
pub const AUDIT_FILTER_STATE: &str = "State";
pub const AUDIT_FILTER_REASON: &str = "Reason code";
pub const AUDIT_FILTER_ACTION: &str = "Action";
pub const AUDIT_ANY: &str = "any";
pub const AUDIT_ONLY_OPERATIONS: &str = "filters password operations only.";
pub const AUDIT_ONLY_ADMINISTRATION: &str = "filters administrative changes only.";
pub const AUDIT_NOT_ADMINISTRATION: &str = "does not filter administrative changes.";
pub const AUDIT_BAD_TIME: &str = "is not a date (YYYY-MM-DD) or an RFC 3339 time.";
pub const AUDIT_BAD_KIND: &str =
    "The trail is password operations, administrative changes or security events.";

/// The title of the page answering a request past a limit.
pub const TOO_MANY_TITLE: &str = "Please wait";
/// Its link back.
pub const TRY_AGAIN: &str = "Try again";
/// The page when every session is taken.
pub const BUSY: &str = "The portal is busy right now. Please try again shortly.";

/// When a refused request may be tried again.
pub fn retry_in(seconds: u64) -> String {
    if seconds == 1 {
        "Try again in 1 second.".to_owned()
    } else {
        format!("Try again in {seconds} seconds.")
    }
}

/// The outcome of an operation in plain words, with the next step.
pub fn explain(reason: &str, message: &str) -> String {
    let (what, next) = match reason {
        "OK" => ("Done: the directory accepted the change.", ""),
        "WRITEBACK_DISABLED" => (
            "Password writeback is switched off for your organization.",
            "Ask an administrator to switch it on.",
        ),
        "UNSUPPORTED_OPERATION" => ("This is not something password writeback does.", ""),
        "PERMISSION_DENIED" => ("You are not allowed to do this.", ""),
        "UNAUTHENTICATED" | "TOKEN_EXPIRED" => {
            ("Your sign-in has expired.", "Sign in again and retry.")
        }
        "STRONG_AUTHENTICATION_REQUIRED" => (
            "This needs a recent sign-in with multi-factor authentication.",
            "Sign in again with multi-factor authentication, then retry.",
        ),
        "THROTTLED" => (
            "Too many resets of this account in the last hour.",
            "Wait until the time below, then retry.",
        ),
        "RATE_LIMITED" => (
            "Too many requests in a short time.",
            "Wait a moment, then retry.",
        ),
        "PASSWORD_TOO_SHORT" => ("The new password is too short.", "Choose a longer one."),
        "PASSWORD_COMPLEXITY" => (
            "The new password does not mix enough kinds of characters, or contains your name.",
            "Mix upper- and lower-case letters, digits and symbols.",
        ),
        "PASSWORD_IN_HISTORY" => (
            "You used this password before.",
            "Choose one you have not used.",
        ),
        "PASSWORD_MIN_AGE" => (
            "Your password was changed too recently to change it again.",
            "Wait until the time below, or ask the help desk for a reset.",
        ),
        "PASSWORD_BANNED" => (
            "The new password is too easy to guess.",
            "Add unrelated words or characters.",
        ),
        "WRONG_OLD_PASSWORD" => (
            "The current password is not right.",
            "Type your current password again, or reset it instead.",
        ),
        "INVALID_ARGUMENT" => (
            "Something in the request is not right.",
            "Correct it and try again.",
        ),
        "USER_NOT_FOUND" => ("No such user in the directory.", "Check the name."),
        "QUERY_TOO_SHORT" => ("Type at least 2 characters of the name to search for.", ""),
        "PROTECTED_ACCOUNT" => (
            "This account is protected and cannot be changed here.",
            "Ask a domain administrator.",
        ),
        "ACCOUNT_DISABLED" => ("The account is disabled.", "Ask the help desk."),
        "ACCOUNT_LOCKED_OUT" => ("The account is locked.", "Unlock it first."),
        "NO_AGENT_ONLINE" | "DC_UNREACHABLE" | "TIMEOUT" | "OVERLOADED" | "UNAVAILABLE" => (
            "The on-premises directory could not be reached right now.",
            "Retry in a few minutes; if it persists, tell the help desk.",
        ),
        _ => (
            "The change was not made.",
            "Tell the help desk what you see below.",
        ),
    };
    let mut out = what.to_owned();
    if !next.is_empty() {
        out.push(' ');
        out.push_str(next);
    }
    if !message.is_empty() && reason != "OK" {
        out.push_str(" Details: ");
        out.push_str(message);
    }
    out
}
