// The service worker of the relay's notifications page: shows what the relay pushes, and opens the chosen web
// client at the event on a click. `?client=` carries the web client URL pattern ({id}, {nevent}).
const pattern = new URL(self.location.href).searchParams.get("client") || "https://njump.me/{nevent}";

self.addEventListener("push", (event) => {
  let message = {};
  try { message = event.data ? event.data.json() : {}; } catch (_) { message = {}; }
  const shown = message.notification || {};
  const data = message.data || {};
  event.waitUntil(self.registration.showNotification(shown.title || "Nostr", {
    body: shown.body || "", data, tag: data.event_id || undefined,
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const id = (event.notification.data || {}).event_id || "";
  if (!/^[0-9a-f]{64}$/.test(id) || /^0+$/.test(id)) return;
  const url = pattern.replace("{id}", id).replace("{nevent}", nevent(id));
  event.waitUntil(self.clients.openWindow(url));
});

// NIP-19 nevent of an event id (a TLV of type 0), in bech32.
function nevent(idHex) {
  const bytes = [0, 32, ...idHex.match(/../g).map((h) => parseInt(h, 16))];
  return bech32("nevent", toWords(bytes));
}

function toWords(bytes) {
  const words = []; let value = 0; let bits = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte; bits += 8;
    while (bits >= 5) { bits -= 5; words.push((value >> bits) & 31); }
  }
  if (bits > 0) words.push((value << (5 - bits)) & 31);
  return words;
}

function bech32(prefix, words) {
  const charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
  const polymod = (values) => {
    const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    let chk = 1;
    for (const v of values) {
      const top = chk >> 25; chk = ((chk & 0x1ffffff) << 5) ^ v;
      for (let i = 0; i < 5; i++) if ((top >> i) & 1) chk ^= gen[i];
    }
    return chk;
  };
  const expanded = [...[...prefix].map((c) => c.charCodeAt(0) >> 5), 0, ...[...prefix].map((c) => c.charCodeAt(0) & 31)];
  const mod = polymod([...expanded, ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  const checksum = [0, 1, 2, 3, 4, 5].map((i) => (mod >> (5 * (5 - i))) & 31);
  return prefix + "1" + [...words, ...checksum].map((w) => charset[w]).join("");
}
