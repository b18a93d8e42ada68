import { randomBytes } from 'node:crypto';

export interface FailedRecipient {
  /** The mailbox we tried. */
  rcpt: string;
  /** The address the sender used, if different (a forward). */
  origRcpt: string;
  /** Enhanced status code, e.g. `5.1.1`. */
  status: string;
  /** The remote reply or our own reason. */
  diagnostic: string;
  /** The host that answered, if any. */
  remoteMta?: string | undefined;
}

export interface DsnInput {
  hostname: string;
  queueId: string;
  /** Who gets the report: the original envelope sender (never empty). */
  to: string;
  arrival: Date;
  now: Date;
  failed: readonly FailedRecipient[];
  /** The header section of the original message (up to the empty line), CRLF line ends. */
  originalHeaders: Buffer;
}

function rfc5322Date(d: Date): string {
  return d.toUTCString().replace('GMT', '+0000');
}

/** Extracts an enhanced status code (RFC 3463) from a reply, or derives one from the reply code. */
export function statusOf(reply: string, permanent: boolean): string {
  const m = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply);
  if (m) return m[1]!;
  return permanent ? '5.0.0' : '4.0.0';
}

/**
 * Builds an RFC 3464 delivery status notification: `multipart/report;
 * report-type=delivery-status` (RFC 6522) with a human-readable part, the
 * `message/delivery-status` part and the original's headers as
 * `text/rfc822-headers`. It is sent from MAILER-DAEMON@<hostname> with a
 * null envelope sender (RFC 5321 §4.5.5), so it can never bounce in turn.
 */
export function buildDsn(d: DsnInput): Buffer {
  const boundary = `=_dsn_${randomBytes(9).toString('base64url')}`;
  const human = [
    `This is the mail system at ${d.hostname}.`,
    '',
    "I'm sorry to have to tell you that your message could not be delivered to",
    'one or more recipients. The reason is given below each address.',
    '',
    ...d.failed.flatMap((f) => [
      `<${f.origRcpt}>${f.origRcpt !== f.rcpt ? ` (forwarded to <${f.rcpt}>)` : ''}:`,
      `    ${f.diagnostic.replace(/[\r\n]+/g, ' ')}`,
      '',
    ]),
  ];
  const perMessage = [`Reporting-MTA: dns; ${d.hostname}`, `X-Makewaves-Queue-ID: ${d.queueId}`, `Arrival-Date: ${rfc5322Date(d.arrival)}`];
  const perRecipient = d.failed.map((f) =>
    [
      `Final-Recipient: rfc822; ${f.rcpt}`,
      ...(f.origRcpt !== f.rcpt ? [`Original-Recipient: rfc822; ${f.origRcpt}`] : []),
      'Action: failed',
      `Status: ${f.status}`,
      ...(f.remoteMta ? [`Remote-MTA: dns; ${f.remoteMta}`] : []),
      `Diagnostic-Code: smtp; ${f.diagnostic.replace(/[\r\n]+/g, ' ')}`,
      `Last-Attempt-Date: ${rfc5322Date(d.now)}`,
    ].join('\r\n'),
  );
  let headers = d.originalHeaders.toString('latin1');
  if (!headers.endsWith('\r\n')) headers += '\r\n';
  const text = [
    `From: Mail Delivery System <MAILER-DAEMON@${d.hostname}>`,
    `To: <${d.to}>`,
    'Subject: Undelivered Mail Returned to Sender',
    `Date: ${rfc5322Date(d.now)}`,
    `Message-ID: <${d.queueId}.${randomBytes(6).toString('hex')}@${d.hostname}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Description: Notification',
    '',
    ...human,
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    'Content-Description: Delivery report',
    '',
    perMessage.join('\r\n'),
    '',
    perRecipient.join('\r\n\r\n'),
    '',
    `--${boundary}`,
    'Content-Type: text/rfc822-headers',
    'Content-Description: Undelivered Message Headers',
    '',
  ].join('\r\n');
  return Buffer.concat([Buffer.from(`${text}\r\n`, 'utf8'), Buffer.from(headers, 'latin1'), Buffer.from(`\r\n--${boundary}--\r\n`)]);
}
