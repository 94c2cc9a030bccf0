/**
 * A QR code of a short text as an SVG data URL, for an <img> in the editor
 * (the voucher of an invitation). Upper-case letters, digits and dashes are
 * encoded in QR's compact alphanumeric mode; anything else as bytes.
 */
import qrcode = require('qrcode-generator');

/** Pixels per module and the quiet zone (in pixels) of the image. */
const CELL = 6;
const MARGIN = 4 * CELL;

export function qrDataUrl(text: string): string {
  const qr = qrcode(0, 'M');
  qr.addData(text, /^[0-9A-Z $%*+\-./:]*$/.test(text) ? 'Alphanumeric' : 'Byte');
  qr.make();
  const svg = qr.createSvgTag(CELL, MARGIN);
  return `data:image/svg+xml;base64,${Buffer.from(svg, 'utf8').toString('base64')}`;
}
