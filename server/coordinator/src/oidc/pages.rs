//! The coordinator's sign-in web pages, rendered on the server: small,
//! self-contained (no script, no external resource), readable on a phone
//! and accessible (language, headings, labelled controls, high contrast).
//! Every dynamic string goes through [`escape`].

/// HTML-escapes `s` for text and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;\
margin:0;background:#f6f7f9;color:#111;line-height:1.5}\
main{max-width:32rem;margin:3rem auto;padding:1.5rem;background:#fff;\
border:1px solid #d0d4da;border-radius:.5rem}\
h1{font-size:1.4rem;margin-top:0}\
.button{display:inline-block;padding:.7rem 1.4rem;background:#0b57d0;color:#fff;\
text-decoration:none;border-radius:.4rem;font-weight:600;font-size:1rem}\
.button:focus{outline:3px solid #111;outline-offset:2px}\
.hint{color:#444;font-size:.9rem}\
li{margin:.8rem 0}form button{font-size:1rem;padding:.5rem 1rem;margin-top:.3rem}\
@media (max-width:36rem){main{margin:0;border:0;border-radius:0}}";

/// A whole page: `title` is escaped here, `body` must already be HTML.
fn page(title: &str, body: &str, head_extra: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{t} · Warren</title>{head_extra}<style>{STYLE}</style></head>\
<body><main>{body}</main></body></html>\n",
        t = escape(title)
    )
}

/// "Sign in to DEPLOYMENT on DEVICE", with the button to the identity
/// provider.
pub fn signin(deployment: &str, device: &str, continue_href: &str) -> String {
    let body = format!(
        "<h1>Sign in to {d} on {dev}</h1>\
<p>A Warren app or command on <strong>{dev}</strong> asked to sign in to <strong>{d}</strong>. \
Continue to your organisation's sign-in page; when you are done, you are sent back to it.</p>\
<p><a class=\"button\" data-testid=\"continue\" href=\"{href}\">Continue to sign in</a></p>\
<p class=\"hint\">If you did not start this, close this page: nothing happens without you.</p>",
        d = escape(deployment),
        dev = escape(device),
        href = escape(continue_href),
    );
    page(&format!("Sign in to {deployment}"), &body, "")
}

/// The app's landing page: follows the `warren://` link at once and
/// offers it as a button in case the browser asks first.
pub fn signed_in_app(deployment: &str, link: &str) -> String {
    let body = format!(
        "<h1>You are signed in — return to Warren</h1>\
<p>You are signed in to <strong>{d}</strong>. Warren should open by itself; if it does not, press the button.</p>\
<p><a class=\"button\" data-testid=\"return\" href=\"{l}\">Return to Warren</a></p>\
<p class=\"hint\">You can close this page afterwards.</p>",
        d = escape(deployment),
        l = escape(link),
    );
    let refresh = format!(
        "<meta http-equiv=\"refresh\" content=\"0;url={}\">",
        escape(link)
    );
    page("Signed in", &body, &refresh)
}

/// The device-code landing page after the identity provider.
pub fn signed_in_device(deployment: &str, device: &str) -> String {
    let body = format!(
        "<h1>You are signed in</h1>\
<p><strong>{dev}</strong> is now signed in to <strong>{d}</strong>; it continues by itself in a few seconds.</p>\
<p class=\"hint\">You can close this page.</p>",
        d = escape(deployment),
        dev = escape(device),
    );
    page("Signed in", &body, "")
}

/// The form where a person types the code their terminal shows.
pub fn device_entry(deployment: &str, problem: Option<&str>) -> String {
    let alert = problem
        .map(|p| {
            format!(
                "<p role=\"alert\" data-testid=\"problem\"><strong>{}</strong></p>",
                escape(p)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in a device to {d}</h1>{alert}\
<form method=\"get\" action=\"device\">\
<p><label for=\"code\">Code shown on the device</label><br>\
<input id=\"code\" name=\"code\" autocomplete=\"off\" autocapitalize=\"characters\" spellcheck=\"false\" \
required maxlength=\"16\" placeholder=\"ABCD-EFGH\" style=\"font-size:1.2rem;padding:.4rem;width:12rem\"></p>\
<p><button class=\"button\" type=\"submit\" data-testid=\"submit\" style=\"border:0\">Next</button></p></form>",
        d = escape(deployment),
    );
    page("Sign in a device", &body, "")
}

/// "Sign in to DEPLOYMENT on DEVICE" for a device code, showing the code
/// so the person can compare it with the terminal's.
pub fn device_confirm(
    deployment: &str,
    device: &str,
    user_code: &str,
    continue_href: &str,
) -> String {
    let body = format!(
        "<h1>Sign in to {d} on {dev}</h1>\
<p>Check that <strong>{dev}</strong> shows the code <strong data-testid=\"user-code\">{c}</strong>. \
If it does, continue to your organisation's sign-in page.</p>\
<p><a class=\"button\" data-testid=\"continue\" href=\"{href}\">Continue to sign in</a></p>\
<p class=\"hint\">If you did not start this, close this page: a code someone sent you signs in their device as you.</p>",
        d = escape(deployment),
        dev = escape(device),
        c = escape(user_code),
        href = escape(continue_href),
    );
    page(&format!("Sign in to {deployment}"), &body, "")
}

/// The tokens page before its own sign-in.
pub fn tokens_signin(deployment: &str, continue_href: &str) -> String {
    let body = format!(
        "<h1>Your devices on {d}</h1>\
<p>Sign in to see the devices signed in to <strong>{d}</strong> as you, and to sign any of them out.</p>\
<p><a class=\"button\" data-testid=\"continue\" href=\"{href}\">Continue to sign in</a></p>",
        d = escape(deployment),
        href = escape(continue_href),
    );
    page("Your devices", &body, "")
}

/// One token on the tokens page.
pub struct TokenRow {
    pub id: String,
    /// The device name, or what the token is when it has none.
    pub device: String,
    pub created: i64,
    pub last_used: Option<i64>,
}

/// `2026-12-06 22:05 UTC` from Unix seconds (the RFC 3339 stamp `token
/// list` prints, shortened for people).
pub fn utc(secs: i64) -> String {
    let stamp = crate::db::rfc3339(secs);
    let (date, time) = stamp.split_once('T').unwrap_or((stamp.as_str(), ""));
    format!("{date} {} UTC", time.get(..5).unwrap_or(time))
}

/// The signed-in person's tokens, each with a button that revokes it.
pub fn tokens(
    deployment: &str,
    user: &str,
    rows: &[TokenRow],
    csrf: &str,
    notice: Option<&str>,
) -> String {
    let notice = notice
        .map(|n| {
            format!(
                "<p role=\"status\" data-testid=\"notice\"><strong>{}</strong></p>",
                escape(n)
            )
        })
        .unwrap_or_default();
    let list = if rows.is_empty() {
        "<p data-testid=\"empty\">No device is signed in as you.</p>".to_string()
    } else {
        let mut items = String::new();
        for r in rows {
            let last = r.last_used.map(utc).unwrap_or_else(|| "never".into());
            items.push_str(&format!(
                "<li data-testid=\"token\" data-token-id=\"{id}\"><strong>{dev}</strong><br>\
<span class=\"hint\">signed in {created}; last used {last}; id {id}</span>\
<form method=\"post\" action=\"tokens/revoke\">\
<input type=\"hidden\" name=\"id\" value=\"{id}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" data-testid=\"revoke\" aria-label=\"Sign out {dev}\">Sign out this device</button></form></li>",
                id = escape(&r.id),
                dev = escape(&r.device),
                created = escape(&utc(r.created)),
                last = escape(&last),
                csrf = escape(csrf),
            ));
        }
        format!("<ul style=\"padding-left:1.2rem\">{items}</ul>")
    };
    let body = format!(
        "<h1>Your devices on {d}</h1>{notice}<p>Signed in as <strong>{u}</strong>. \
Signing a device out revokes its token at once; it then asks to sign in again.</p>{list}",
        d = escape(deployment),
        u = escape(user),
    );
    page("Your devices", &body, "")
}

/// An error page: what happened and what to do.
pub fn error(title: &str, what: &str, next: &str) -> String {
    let body = format!(
        "<h1>{t}</h1><p>{w}</p><p>{n}</p>",
        t = escape(title),
        w = escape(what),
        n = escape(next),
    );
    page(title, &body, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn dynamic_strings_are_escaped_in_every_page() {
        let evil = "<script>alert(1)</script>\"'";
        for html in [
            signin(evil, evil, evil),
            signed_in_app(evil, evil),
            signed_in_device(evil, evil),
            device_entry(evil, Some(evil)),
            device_confirm(evil, evil, evil, evil),
            tokens_signin(evil, evil),
            tokens(
                evil,
                evil,
                &[TokenRow {
                    id: evil.into(),
                    device: evil.into(),
                    created: 0,
                    last_used: None,
                }],
                evil,
                Some(evil),
            ),
            error(evil, evil, evil),
        ] {
            assert!(!html.contains("<script>"), "{html}");
            assert!(!html.contains("\"'"), "{html}");
            assert!(html.contains("&lt;script&gt;"), "{html}");
        }
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_594_700), "2026-12-06 22:05 UTC");
    }

    #[test]
    fn pages_are_accessible_and_fit_a_phone() {
        let html = signin(
            "warren.example.com",
            "alice-laptop (Linux)",
            "/oidc/start/x",
        );
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("name=\"viewport\""));
        assert!(html.contains("<h1>Sign in to warren.example.com on alice-laptop (Linux)</h1>"));
        assert!(html.contains("data-testid=\"continue\" href=\"/oidc/start/x\""));
        assert!(!html.contains("http://") && !html.contains("https://"));
        let app = signed_in_app("d", "warren://signin?code=a&state=b");
        assert!(app.contains("content=\"0;url=warren://signin?code=a&amp;state=b\""));
        assert!(app.contains("href=\"warren://signin?code=a&amp;state=b\""));
    }
}
