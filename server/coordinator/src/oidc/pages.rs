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
            error(evil, evil, evil),
        ] {
            assert!(!html.contains("<script>"), "{html}");
            assert!(!html.contains("\"'"), "{html}");
            assert!(html.contains("&lt;script&gt;"), "{html}");
        }
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
