// The promotion console: the admin API only, from this page's origin. The
// admin token lives in this closure and nowhere else (no storage, no cookie).
(() => {
  "use strict";
  let token = null;
  let opened = null; // { id, name, stream: AbortController }
  const LIST_EVERY_MS = 5000;

  const $ = (id) => document.getElementById(id);

  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    token = $("token").value;
    $("token").value = "";
    const answer = await api("GET", "/api/v1/coupons?limit=1");
    if (answer.status !== 200) {
      token = null;
      $("login-error").textContent = answer.body?.message ?? `refused (${answer.status})`;
      return;
    }
    $("login").hidden = true;
    $("console").hidden = false;
    await list();
    setInterval(list, LIST_EVERY_MS);
  });

  $("refresh").addEventListener("click", list);

  async function list() {
    const answer = await api("GET", "/api/v1/coupons?limit=100");
    if (answer.status !== 200) {
      say(answer.body?.message ?? `the list failed (${answer.status})`);
      return;
    }
    const rows = answer.body.coupons.map((c) => {
      const row = document.createElement("tr");
      row.dataset.id = c.id;
      row.classList.toggle("open", opened?.id === c.id);
      for (const value of [c.id, c.name, c.state.toUpperCase(), `${c.issued} / ${c.totalQuantity}`, c.remainingQuantity, c.persisted]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      row.addEventListener("click", () => open(c.id, c.name));
      return row;
    });
    $("coupons").replaceChildren(...rows);
  }

  function open(id, name) {
    opened?.stream.abort();
    opened = { id, name, stream: new AbortController() };
    for (const row of $("coupons").children) row.classList.toggle("open", Number(row.dataset.id) === id);
    $("title").textContent = `#${id} ${name}`;
    $("detail").hidden = false;
    say("");
    follow(opened);
  }

  // The live view's Server-Sent Events, read with fetch (EventSource cannot
  // send the token), reconnecting after the `retry` the server sets.
  async function follow(view) {
    let retry = 2000;
    while (!view.stream.signal.aborted) {
      try {
        const response = await fetch(`/api/v1/coupons/${view.id}/stats/stream`, {
          headers: { Authorization: `Bearer ${token}` },
          signal: view.stream.signal,
        });
        if (response.status !== 200) {
          $("live").textContent = `live view refused (${response.status})`;
          return;
        }
        $("live").textContent = "live";
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const event = parse(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
            if (event.retry) retry = event.retry;
            if (event.type === "stats") show(JSON.parse(event.data));
            if (event.type === "unavailable") $("live").textContent = JSON.parse(event.data).message;
          }
        }
      } catch (error) {
        if (view.stream.signal.aborted) return;
      }
      $("live").textContent = "reconnecting…";
      await new Promise((resolve) => setTimeout(resolve, retry));
    }
  }

  function parse(block) {
    const event = { type: "message", data: "" };
    for (const line of block.split("\n")) {
      const colon = line.indexOf(":");
      const field = line.slice(0, colon);
      const value = line.slice(colon + 1).trimStart();
      if (field === "event") event.type = value;
      else if (field === "data") event.data += value;
      else if (field === "retry") event.retry = Number(value);
    }
    return event;
  }

  function show(stats) {
    if (stats.couponId !== opened?.id) return;
    $("state").textContent = stats.state.toUpperCase();
    $("state").className = `state-${stats.state}`;
    for (const field of ["issued", "remaining", "persisted", "pending", "redeemed", "revoked"]) {
      $(field).textContent = stats[field];
    }
    chart(stats.issuedPerSecond);
    const refusals = Object.entries(stats.rejections).map(([code, n]) => {
      const item = document.createElement("li");
      item.textContent = `${code}: ${n}`;
      return item;
    });
    $("rejections").replaceChildren(...refusals);
  }

  function chart(perSecond) {
    const most = Math.max(1, ...perSecond);
    const width = 300 / perSecond.length;
    const bars = perSecond.map((n, i) => {
      const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      const height = (n / most) * 96;
      bar.setAttribute("x", i * width + 2);
      bar.setAttribute("y", 100 - height);
      bar.setAttribute("width", width - 4);
      bar.setAttribute("height", height);
      const label = document.createElementNS("http://www.w3.org/2000/svg", "title");
      label.textContent = `${n} issued`;
      bar.append(label);
      return bar;
    });
    $("chart").replaceChildren(...bars);
  }

  for (const [button, action, question] of [
    ["pause", "pause", "Pause issuance of"],
    ["resume", "resume", "Resume issuance of"],
    ["end", "end", "End now, for good,"],
  ]) {
    $(button).addEventListener("click", async () => {
      if (!opened || !confirm(`${question} #${opened.id} ${opened.name}?`)) return;
      const answer = await api("POST", `/api/v1/coupons/${opened.id}/${action}`);
      // The live view shows the new state within a second.
      say(answer.status === 200 ? `${action}: done` : `${action}: ${answer.body?.message ?? answer.status}`);
      await list();
    });
  }

  function say(text) {
    $("message").textContent = text;
  }
})();
