// The pool's status page: reads `stats`, `stats_address` and `get_block_payouts` (relative
// URLs) and renders them.
// Plain JavaScript, no libraries, nothing loaded from elsewhere.
"use strict";

let pool = null;

const $ = (id) => document.getElementById(id);
const text = (id, value) => { const el = $(id); if (el) el.textContent = value; };

function hashrate(h) {
  h = Number(h) || 0;
  const units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s"];
  let i = 0;
  while (h >= 1000 && i < units.length - 1) { h /= 1000; i++; }
  return (i === 0 ? h.toFixed(0) : h.toFixed(2)) + " " + units[i];
}

function number(n) {
  return (Number(n) || 0).toLocaleString("en-US");
}

function coins(atomic) {
  const c = (pool && pool.config) || { coinUnits: 100000000, coinDecimalPlaces: 8, symbol: "PAS" };
  const v = (Number(atomic) || 0) / c.coinUnits;
  return v.toFixed(Math.min(c.coinDecimalPlaces, 8)) + " " + c.symbol;
}

function ago(unixSeconds) {
  const t = Number(unixSeconds) || 0;
  if (!t) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 129600) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function short(s) {
  s = String(s || "");
  return s.length > 18 ? s.slice(0, 9) + "…" + s.slice(-6) : s;
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(tableId, items, render) {
  const body = $(tableId).querySelector("tbody");
  body.textContent = "";
  for (const item of items) {
    const row = document.createElement("tr");
    render(row, item);
    body.appendChild(row);
  }
  if (!items.length) {
    const row = document.createElement("tr");
    const td = cell(row, "nothing yet");
    td.colSpan = $(tableId).querySelectorAll("th").length;
    td.className = "hint";
    body.appendChild(row);
  }
}

function drawChart(points) {
  const canvas = $("hashrate-chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 34;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "12px sans-serif";
  ctx.fillStyle = "#9a99a6";
  if (!points || points.length < 2) {
    ctx.fillText("The chart fills in as the pool samples its hashrate.", pad, h / 2);
    text("chart-note", points && points.length === 1 ? "1 sample so far" : "no samples yet");
    return;
  }
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const max = Math.max(1, ...points.map((p) => p[1]));
  const x = (t) => pad + (w - 2 * pad) * (t1 === t0 ? 0 : (t - t0) / (t1 - t0));
  const y = (v) => h - pad + 10 - (h - 2 * pad) * (v / max);
  ctx.strokeStyle = "#2f2e36";
  ctx.beginPath();
  for (let i = 0; i <= 4; i++) { const yy = y(max * i / 4); ctx.moveTo(pad, yy); ctx.lineTo(w - pad, yy); }
  ctx.stroke();
  ctx.fillText(hashrate(max), pad, y(max) - 4);
  ctx.strokeStyle = "#f6b8f2";
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(p[0]), y(p[1])) : ctx.moveTo(x(p[0]), y(p[1]))));
  ctx.stroke();
  text("chart-note", points.length + " samples over " + Math.round((t1 - t0) / 60) + " min");
}

function renderPorts(cfg) {
  fill("ports", cfg.ports || [], (row, p) => {
    cell(row, p.port);
    cell(row, number(p.difficulty));
    cell(row, p.desc || "");
    cell(row, p.tls === "auto" ? "TLS or plain" : p.ssl ? "TLS only" : "plain");
    const tls = p.ssl ? " --tls" : "";
    const cmd = "xmrig -a rx/0 -o " + (cfg.poolHost || location.hostname) + ":" + p.port + tls + " -u ADDRESS -p WORKER";
    const td = cell(row, "", "mono");
    const code = document.createElement("code");
    code.textContent = cmd;
    td.appendChild(code);
    const copy = document.createElement("button");
    copy.className = "copy";
    copy.type = "button";
    copy.textContent = "copy";
    copy.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(cmd));
    td.appendChild(copy);
  });
}

function render(stats) {
  pool = stats;
  const p = stats.pool, cfg = stats.config, net = stats.network;
  text("title", (cfg.coin ? cfg.coin.charAt(0).toUpperCase() + cfg.coin.slice(1) : "Pastella") + " mining pool");
  text("pool-host", cfg.poolHost);
  text("updated", new Date().toLocaleTimeString());
  text("pool-hashrate", hashrate(p.hashrate));
  text("pool-hashrate-solo", hashrate(p.hashrateSolo));
  text("miners", number(p.miners));
  text("workers", number(p.workers));
  text("miners-solo", number(p.minersSolo));
  text("workers-solo", number(p.workersSolo));
  text("network-hashrate", hashrate(net.difficulty / (cfg.coinDifficultyTarget || 30)));
  text("network-difficulty", number(net.difficulty));
  text("height", number(net.height));
  text("last-block-age", ago(stats.lastblock.timestamp));
  text("round-effort", net.difficulty ? (100 * p.roundHashes / net.difficulty).toFixed(1) + " %" : "–");
  text("last-found", p.lastBlockFound ? ago(Number(p.lastBlockFound) / 1000) : "never");
  text("blocks-found", number(p.totalBlocks + p.totalBlocksSolo));
  text("fee", cfg.fee + " %");
  text("min-payout", coins(cfg.minPaymentThreshold));
  drawChart(stats.charts.hashrate);
  renderPorts(cfg);
  fill("blocks", p.blocks.slice(0, 20), (row, b) => {
    row.dataset.status = b.status;
    cell(row, number(b.height));
    cell(row, b.status, "status-" + b.status);
    cell(row, b.type);
    cell(row, b.effort + " %");
    cell(row, b.reward ? coins(b.reward) : "–");
    cell(row, ago(b.timestamp));
    cell(row, short(b.miner), "mono");
    if (b.hash) {
      row.dataset.hash = b.hash;
      row.addEventListener("click", () => openBlock(b.hash));
    }
  });
  fill("payments", p.payments.slice(0, 20), (row, pay) => {
    cell(row, ago(pay.timestamp));
    cell(row, coins(pay.amount));
    cell(row, coins(pay.fee));
    cell(row, pay.address ? short(pay.address) : "–", "mono");
    cell(row, short(pay.txHash), "mono");
  });
  document.body.dataset.ready = "1";
}

async function loadStats() {
  try {
    const response = await fetch("stats", { headers: { Accept: "application/json" } });
    render(await response.json());
  } catch (e) {
    text("updated", "failed (" + e.message + ")");
  }
}

async function lookup(address) {
  address = (address || "").trim();
  if (!address) return;
  $("address").value = address;
  text("miner-message", "Looking up…");
  try {
    const response = await fetch("stats_address?address=" + encodeURIComponent(address));
    const data = await response.json();
    if (data.error) {
      $("miner").hidden = true;
      text("miner-message", "No shares or balance for this address yet.");
      document.body.dataset.miner = "missing";
      return;
    }
    const s = data.stats;
    text("miner-balance", coins(s.balance));
    text("miner-paid", coins(s.paid));
    text("miner-hashrate", hashrate(s.hashrate));
    text("miner-hashrate-24h", hashrate(s.hashrate_24h));
    text("miner-round", (Number(s.roundSharePercent) || 0).toFixed(2) + " %");
    fill("miner-workers", data.workers, (row, w) => {
      cell(row, w.name || "(no name)", "mono");
      cell(row, w.type);
      cell(row, hashrate(w.hashrate));
      cell(row, number(w.hashes));
      cell(row, ago(w.lastShare));
    });
    fill("miner-blocks", data.blocks, (row, b) => {
      row.dataset.hash = b.hash;
      row.addEventListener("click", () => openBlock(b.hash));
      cell(row, number(b.height) + " (" + b.type + ")");
      cell(row, b.status, "status-" + b.status);
      cell(row, (Number(b.sharePercent) || 0).toFixed(2) + " %");
      const credit = b.status === "orphaned" ? "nothing (orphaned)" : coins(b.minerReward) + (b.status === "confirmed" ? "" : " (estimate)");
      cell(row, credit);
    });
    $("miner").hidden = false;
    text("miner-message", data.payments.length + " payments, " + data.blocks.length + " recent blocks shared.");
    document.body.dataset.miner = "loaded";
  } catch (e) {
    text("miner-message", "Lookup failed: " + e.message);
  }
}

// The block detail view: `get_block_payouts` as the pool stored it when crediting the block.
async function showBlock(hash) {
  const section = $("block-detail");
  try {
    const response = await fetch("get_block_payouts?hash=" + encodeURIComponent(hash));
    const b = await response.json();
    if (b.error) {
      section.hidden = false;
      text("bd-height", "?");
      text("bd-note", "No payout record for this block: " + b.error);
      document.body.dataset.block = "missing";
      return;
    }
    text("bd-height", number(b.height));
    text("bd-status", b.type + ", " + b.status);
    text("bd-hash", b.hash);
    text("bd-reward", b.reward == null ? "unknown" : coins(b.reward));
    text("bd-fee", coins(b.poolFee));
    text("bd-fee-rate", b.feeBps == null ? "" : (b.feeBps / 100).toFixed(2) + " %");
    text("bd-finder-reward", coins(b.finderReward));
    text("bd-finder", short(b.finder));
    text("bd-credited", coins(b.credited));
    text("bd-dust", number(b.dust) + " atomic units");
    text("bd-window", number(b.windowTotal) + " units, " + b.window.length + " address(es)");
    text("bd-n", number(b.windowSize));
    let note = b.note;
    if (b.partial) {
      note += " The oldest share record counted is " + short(b.partial.address) + "'s: " + number(b.partial.counted) +
        " of its " + number(b.partial.recordDifficulty) + " units fit in the window.";
    }
    text("bd-note", note);
    const credits = {};
    for (const c of b.credits) credits[c.address] = c;
    const rows = b.window.map((w) => ({ address: w.address, difficulty: w.difficulty, partial: w.partial, credit: credits[w.address] }));
    for (const c of b.credits) if (!b.window.some((w) => w.address === c.address)) rows.push({ address: c.address, difficulty: 0, credit: c });
    fill("bd-credits", rows, (row, r) => {
      row.dataset.address = r.address;
      cell(row, r.address, "mono");
      cell(row, number(r.difficulty) + (r.partial ? " (partial: " + number(r.partial.counted) + " of " + number(r.partial.recordDifficulty) + ")" : ""));
      cell(row, r.credit ? coins(r.credit.amount) : "nothing");
      cell(row, r.credit && r.credit.finderReward ? coins(r.credit.finderReward) : "");
    });
    const sum = b.credits.reduce((s, c) => s + Number(c.amount), 0);
    text("bd-check", b.status === "confirmed" && b.reward != null
      ? "credits " + number(sum) + " + fee " + number(b.poolFee) + " + dust " + number(b.dust) + " = " +
        number(sum + b.poolFee + b.dust) + " atomic units (reward " + number(b.reward) + "). Recompute it with: pastella-pool verify-block " + b.hash
      : "");
    section.hidden = false;
    document.body.dataset.block = b.hash;
  } catch (e) {
    text("bd-note", "Loading the block failed: " + e.message);
  }
}

function openBlock(hash) {
  history.replaceState(null, "", "#block=" + encodeURIComponent(hash));
  showBlock(hash);
  $("block-detail").scrollIntoView();
}

function blockFromLocation() {
  return new URLSearchParams(location.hash.replace(/^#/, "")).get("block") || "";
}

function addressFromLocation() {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const query = new URLSearchParams(location.search);
  return hash.get("miner") || query.get("miner") || query.get("address") || "";
}

$("lookup").addEventListener("submit", (e) => {
  e.preventDefault();
  const address = $("address").value.trim();
  history.replaceState(null, "", "#miner=" + encodeURIComponent(address));
  lookup(address);
});
window.addEventListener("hashchange", () => {
  if (blockFromLocation()) showBlock(blockFromLocation());
  else lookup(addressFromLocation());
});

loadStats().then(() => {
  lookup(addressFromLocation());
  if (blockFromLocation()) showBlock(blockFromLocation());
});
setInterval(loadStats, 15000);
