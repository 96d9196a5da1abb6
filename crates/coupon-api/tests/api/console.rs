//! The promotion console and Swagger UI in a real browser: headless Chromium
//! (Debian's, installed by `scripts/test-tools.sh`) driven through
//! chromedriver. The operator signs in with the admin token, watches a
//! coupon's remaining count fall during a small spike, and pauses it; the
//! page and the API both say PAUSED. Screenshots of the console and of
//! Swagger UI are saved under `target/<profile>/screenshots/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use coupon_testkit::{target_dir, wait_until};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Isolation, TestApp, ADMIN_TOKEN};

/// chromedriver on a free loopback port, stopped when dropped. It and its
/// Chromium keep their profile and temporary files in a folder of their own
/// under `target/`, removed when dropped.
struct Driver {
    process: tokio::process::Child,
    url: String,
    home: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

impl Driver {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port();
        let home = target_dir().join(format!("chromium-{port}"));
        std::fs::create_dir_all(&home).expect("chromium's folder");
        let process = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", &home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is missing: run scripts/test-tools.sh (make test does)");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        wait_until("chromedriver", Duration::from_secs(30), || async {
            reqwest::get(&status).await.ok().filter(|answer| answer.status().is_success()).map(drop)
        })
        .await;
        Self { process, url, home }
    }

    /// A headless Chromium session.
    async fn browser(&self) -> Client {
        let profile = format!("--user-data-dir={}", self.home.join("profile").display());
        let options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000", profile],
        });
        let capabilities = [("goog:chromeOptions".to_string(), options)].into_iter().collect();
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

/// The text of the element `css` once `ready` holds for it.
async fn text_when(browser: &Client, css: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
    wait_until(what, Duration::from_secs(30), || async {
        let text = browser.find(Locator::Css(css)).await.ok()?.text().await.ok()?;
        ready(&text).then_some(text)
    })
    .await
}

async fn screenshot(browser: &Client, name: &str) {
    let folder = target_dir().join("screenshots");
    std::fs::create_dir_all(&folder).expect("a screenshots folder");
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(folder.join(name), png).expect("writing the screenshot");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_watches_a_spike_in_the_console_and_pauses_it_and_finds_issue_in_swagger_ui() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;

    browser.goto(&format!("{}/console/", app.base)).await.unwrap();
    browser.find(Locator::Id("token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    browser.find(Locator::Css("#login-form button")).await.unwrap().click().await.unwrap();
    let row = format!("#coupons tr[data-id='{coupon}']");
    wait_until("the promotion in the list", Duration::from_secs(30), || async {
        browser.find(Locator::Css(&row)).await.ok()
    })
    .await
    .click()
    .await
    .unwrap();
    text_when(&browser, "#remaining", "the live view", |text| text == "300").await;

    // A small spike, while the page watches: the count falls to what is left.
    let spike = futures::stream::iter(1..=120).map(|customer| app.issue(coupon, customer)).buffer_unordered(8);
    let issued = spike.filter(|(status, _)| futures::future::ready(*status == StatusCode::CREATED)).count().await;
    assert_eq!(issued, 120);
    text_when(&browser, "#remaining", "the remaining count to fall", |text| text == "180").await;
    text_when(&browser, "#chart", "the chart", |_| true).await;
    screenshot(&browser, "console.png").await;

    browser.find(Locator::Id("pause")).await.unwrap().click().await.unwrap();
    browser.accept_alert().await.expect("the console asks before it pauses");
    text_when(&browser, "#state", "the page to say PAUSED", |text| text == "PAUSED").await;
    let (_, stats) = app.get(&format!("/api/v1/coupons/{coupon}/stats")).await;
    assert_eq!(stats["state"], "paused", "{stats}");
    assert_eq!(app.issue(coupon, 999).await.1["code"], "PAUSED");
    screenshot(&browser, "console-paused.png").await;

    browser.goto(&format!("{}/swagger-ui/", app.base)).await.unwrap();
    let issue = "[data-path='/api/v1/coupons/{couponId}/issue']";
    wait_until("Swagger UI to list the issue operation", Duration::from_secs(30), || async {
        browser.find(Locator::Css(issue)).await.ok()
    })
    .await;
    screenshot(&browser, "swagger-ui.png").await;

    browser.close().await.unwrap();
    app.stop().await;
}
