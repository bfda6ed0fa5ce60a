// The relay's notifications page: sign in with a NIP-07 extension, subscribe this browser with the relay's VAPID
// key, register the subscription with a kind 22456 registration (encrypted and signed through the extension, the
// same path apps use), keep presence honest (online while the page is open and visible), and list, remove and test
// the signed-in person's devices with NIP-98-signed requests. Plain JavaScript: nothing to build.
"use strict";

const KINDS = { dms: [4, 1059], mentions: [1], replies: [1], reactions: [7], zaps: [9735], groups: [9, 10, 11, 12] };
const HEARTBEAT_MS = 60_000;
const $ = (id) => document.getElementById(id);
// The relay this script came from (the page's own origin when the relay serves the page).
const RELAY = new URL(document.currentScript.src).origin;
const state = { me: null, info: null, deviceId: null, beat: null };

function say(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function relayInfo() {
  if (!state.info) {
    const response = await fetch(RELAY + "/", { headers: { Accept: "application/nostr+json" } });
    state.info = await response.json();
  }
  return state.info;
}

function b64urlToBytes(text) {
  const plain = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(plain, (c) => c.charCodeAt(0));
}

function toB64url(text) {
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const now = () => Math.floor(Date.now() / 1000);

// Publishes a signed event and waits for the relay's OK.
function publish(event) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(RELAY.replace(/^http/, "ws"));
    const timer = setTimeout(() => { socket.close(); reject(new Error("the relay did not answer")); }, 10_000);
    socket.onopen = () => socket.send(JSON.stringify(["EVENT", event]));
    socket.onerror = () => { clearTimeout(timer); reject(new Error("cannot reach the relay")); };
    socket.onmessage = (message) => {
      const [type, id, accepted, reason] = JSON.parse(message.data);
      if (type !== "OK" || id !== event.id) return;
      clearTimeout(timer);
      socket.close();
      if (accepted) resolve(reason); else reject(new Error(reason || "refused"));
    };
  });
}

// A kind 22456 event to the relay's push key, its content encrypted through the extension (NIP-44, else NIP-04).
async function sendToPushKey(content) {
  const info = await relayInfo();
  const plain = JSON.stringify(content);
  const cipher = window.nostr.nip44
    ? await window.nostr.nip44.encrypt(info.self, plain)
    : await window.nostr.nip04.encrypt(info.self, plain);
  const event = await window.nostr.signEvent({ kind: 22456, created_at: now(), tags: [["p", info.self]], content: cipher });
  return publish(event);
}

// A fetch signed with NIP-98 by the signed-in person.
async function signedFetch(method, path, body) {
  const url = RELAY + path;
  const tags = [["u", url], ["method", method]];
  if (body !== undefined) tags.push(["payload", await sha256Hex(new TextEncoder().encode(body))]);
  const auth = await window.nostr.signEvent({ kind: 27235, created_at: now(), tags, content: "" });
  const headers = { Authorization: "Nostr " + btoa(JSON.stringify(auth)) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

async function signIn() {
  if (!window.nostr) return say("No Nostr signer extension (NIP-07) found in this browser.", true);
  try {
    state.me = await window.nostr.getPublicKey();
  } catch (e) {
    return say("Signing in was refused: " + e.message, true);
  }
  $("who").textContent = "Signed in as " + state.me.slice(0, 8) + "…" + state.me.slice(-8);
  $("signed-in").hidden = false;
  $("client").value = ((await relayInfo()).push || {}).web_client_url || "https://njump.me/{nevent}";
  $("sign-in").hidden = true;
  await findThisBrowser();
  await showDevices();
}

// This browser's subscription, if it has one already: its device id, and presence from now on.
async function findThisBrowser() {
  if (!("serviceWorker" in navigator)) return;
  const registration = await navigator.serviceWorker.getRegistration("/");
  const subscription = registration && (await registration.pushManager.getSubscription());
  if (subscription) {
    state.deviceId = "webpush:" + toB64url(JSON.stringify(subscription.toJSON()));
    keepPresence();
  }
}

async function enable() {
  try {
    const info = await relayInfo();
    if (!info.push || !info.push.vapid_public_key) throw new Error("this relay does not send Web Push");
    if ((await Notification.requestPermission()) !== "granted") throw new Error("notifications are not allowed");
    const client = encodeURIComponent($("client").value || info.push.web_client_url || "");
    const worker = await navigator.serviceWorker.register("/notifications/sw.js?client=" + client, { scope: "/" });
    await navigator.serviceWorker.ready;
    const subscription = await worker.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: b64urlToBytes(info.push.vapid_public_key),
    });
    state.deviceId = "webpush:" + toB64url(JSON.stringify(subscription.toJSON()));
    const chosen = [...document.querySelectorAll("input[name=what]:checked")].map((box) => box.value);
    const kinds = [...new Set(chosen.flatMap((what) => KINDS[what]))];
    const note = await sendToPushKey({ kinds, deviceId: state.deviceId, "#p": [state.me] });
    say("This browser will be notified." + (note ? " (" + note + ")" : ""));
    keepPresence();
    await showDevices();
  } catch (e) {
    say("Could not turn notifications on: " + e.message, true);
  }
}

// Online while this page is open and visible (the relay then holds pushes back: you see things here); offline
// when it is hidden or closed.
function keepPresence() {
  if (state.beat) return;
  const beat = () => { if (document.visibilityState === "visible") sendToPushKey({ online: 1 }).catch(() => {}); };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") beat(); else sendToPushKey({ online: 0 }).catch(() => {});
  });
  window.addEventListener("pagehide", () => sendToPushKey({ online: 0 }).catch(() => {}));
  state.beat = setInterval(beat, HEARTBEAT_MS);
  beat();
}

async function showDevices() {
  try {
    const devices = await signedFetch("GET", "/notifications/devices");
    const rows = $("devices");
    rows.replaceChildren();
    for (const device of devices) {
      const row = rows.insertRow();
      const name = device.platform + (device.protocol === "nip97" ? " (NIP-97)" : "") + (device.id === state.deviceId ? " — this browser" : "");
      row.insertCell().textContent = name;
      row.insertCell().textContent = new Date(device.updated_at * 1000).toLocaleString();
      row.insertCell().textContent = device.badge ?? "";
      const actions = row.insertCell();
      actions.append(button("Send a test", () => act("/notifications/devices/test", device.id, "Test notification sent.")));
      actions.append(" ", button("Remove", () => act("/notifications/devices/remove", device.id, "Device removed.")));
    }
    if (!devices.length) rows.insertRow().insertCell().textContent = "No devices registered.";
  } catch (e) {
    say("Could not list your devices: " + e.message, true);
  }
}

function button(label, onClick) {
  const element = document.createElement("button");
  element.textContent = label;
  element.addEventListener("click", onClick);
  return element;
}

async function act(path, id, done) {
  try {
    await signedFetch("POST", path, JSON.stringify({ id }));
    say(done);
    await showDevices();
  } catch (e) {
    say(e.message, true);
  }
}

$("sign-in").addEventListener("click", signIn);
$("enable").addEventListener("click", enable);
$("refresh").addEventListener("click", showDevices);
