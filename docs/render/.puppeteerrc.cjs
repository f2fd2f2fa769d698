// Never download a browser: the docs are rendered with Debian's Chromium.
module.exports = { skipDownload: true };
