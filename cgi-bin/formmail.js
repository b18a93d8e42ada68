// FormMail: mails a visitor's form to the site owner, and only to them.
//
// What Matt's FormMail got wrong and this does not: the recipient is never
// taken from the form (a `recipient` field may only pick among the
// addresses the site's config lists in forms.recipients, and the suite
// checks that again before anything is queued), the Referer is not a check
// (anyone can forge it), and no field that becomes a header may hold a
// line break (CVE-2002-1771). The suite builds the message itself; this
// handler only says what goes in it.
//
// Fields with a meaning: recipient, subject, email (becomes Reply-To when
// it is an address), redirect (a 303 to a page on this same site after
// success), and the site's honeypot field (filled in: a thank-you page and
// nothing sent). Every other field is listed in the mail in form order.

const CONTROL_FIELDS = new Set(['recipient', 'redirect']);
const LINE_BREAK = /[\r\n]/;
const ADDRESS = /^[^\s@<>()",;:\\[\]]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$/;
const MAX_FIELDS = 200;

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(out, status, title, text, extraHeaders = '') {
  const html =
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>` +
    `<body style="font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em">` +
    `<h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p></body></html>\n`;
  out.write(`Status: ${status}\r\nContent-Type: text/html; charset=utf-8\r\n${extraHeaders}\r\n${html}`);
}

class BadForm extends Error {}

/** application/x-www-form-urlencoded (WHATWG URL §5.1), refusing malformed %-escapes instead of guessing. */
function parseUrlencoded(body) {
  const text = body.toString('utf8');
  if (text.length > 0 && !/^[A-Za-z0-9*\-._~!$'()+,;:@/?=&%]*$/.test(text)) throw new BadForm('the form data contains characters that must be encoded');
  if (/%(?![0-9A-Fa-f]{2})/.test(text)) throw new BadForm('the form data has a malformed %-escape');
  const fields = [];
  for (const pair of text.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const decode = (s) => {
      try {
        return decodeURIComponent(s.replace(/\+/g, ' '));
      } catch {
        throw new BadForm('the form data is not valid UTF-8');
      }
    };
    fields.push([decode(eq === -1 ? pair : pair.slice(0, eq)), decode(eq === -1 ? '' : pair.slice(eq + 1))]);
  }
  return fields;
}

/** multipart/form-data (RFC 7578): text fields in order; uploaded files are named, not mailed. */
function parseMultipart(body, contentType) {
  const m = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;]{1,70}))/i.exec(contentType);
  if (!m) throw new BadForm('multipart form data without a boundary');
  const delimiter = Buffer.from(`--${m[1] ?? m[2]}`);
  const fields = [];
  let pos = body.indexOf(delimiter);
  if (pos === -1) throw new BadForm('multipart form data without its boundary');
  for (;;) {
    pos += delimiter.length;
    if (body[pos] === 45 && body[pos + 1] === 45) return fields; // "--": the closing delimiter
    if (body[pos] !== 13 || body[pos + 1] !== 10) throw new BadForm('malformed multipart delimiter line');
    pos += 2;
    const headEnd = body.indexOf('\r\n\r\n', pos);
    if (headEnd === -1) throw new BadForm('a multipart part without a header end');
    const head = body.subarray(pos, headEnd).toString('utf8');
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), delimiter]), headEnd + 4);
    if (next === -1) throw new BadForm('a multipart part without a closing boundary');
    const disposition = /^content-disposition:\s*form-data(.*)$/im.exec(head);
    if (!disposition) throw new BadForm('a multipart part without Content-Disposition: form-data');
    const name = /;\s*name="([^"]*)"/i.exec(disposition[1]);
    if (!name) throw new BadForm('a multipart part without a name');
    const file = /;\s*filename="([^"]*)"/i.exec(disposition[1]);
    const value = body.subarray(headEnd + 4, next);
    fields.push([name[1], file ? `(file "${file[1]}", ${value.length} bytes, not attached)` : value.toString('utf8')]);
    if (fields.length > MAX_FIELDS) throw new BadForm('too many fields');
    pos = next + 2;
  }
}

/**
 * The redirect after a sent form, or undefined when it leaves the site. It
 * keeps the scheme, host and port the visitor used: a path on the host the
 * visitor asked for stays a relative "/path"; another of the site's own
 * domains gets the visitor's scheme and port (the suite serves all of a
 * site's domains on the same listeners), so a visitor on :8080 or on HTTPS
 * never lands on a connection error.
 */
function sameSite(redirect, env, site) {
  const scheme = env.REQUEST_SCHEME === 'https' ? 'https' : 'http';
  // The Host the visitor sent, when it names this site (the gateway set SERVER_NAME from it).
  let visitor;
  try {
    visitor = new URL(`${scheme}://${env.HTTP_HOST ?? ''}/`);
  } catch {
    visitor = undefined;
  }
  if (!visitor || visitor.hostname.toLowerCase() !== env.SERVER_NAME) visitor = new URL(`${scheme}://${env.SERVER_NAME}/`);
  let url;
  try {
    url = new URL(redirect, visitor);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.username || url.password || !site.domains.includes(url.hostname.toLowerCase())) return undefined;
  const rest = `${url.pathname}${url.search}${url.hash}`;
  // URL keeps "//x" in a path: sent alone it would name the host x.
  // The gateway refuses the same (a browser or a proxy may decode %2F and %5C).
  if (!rest.startsWith('/') || rest.startsWith('//') || /^\/%2f/i.test(rest) || /%5c/i.test(rest)) return undefined;
  if (url.hostname.toLowerCase() === visitor.hostname.toLowerCase()) return rest;
  return `${scheme}://${url.hostname.toLowerCase()}${visitor.port ? `:${visitor.port}` : ''}${rest}`;
}

function indent(value) {
  return value.replace(/\r\n?/g, '\n').split('\n').join('\n    ');
}

export default async function formmail(cgi) {
  const { env, site, stdout } = cgi;
  if (env.REQUEST_METHOD !== 'POST') {
    stdout.write(
      'Status: 405 Method Not Allowed\r\nAllow: POST\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n' +
        `FormMail on ${env.SERVER_NAME} mails a form to the owner of this site.\n` +
        'Point a <form method="post" action="/cgi-bin/formmail"> at it. Fields: subject, email (your address, for replies),\n' +
        'redirect (a page of this site to show afterwards), recipient (one of the addresses the site allows), anything else.\n',
    );
    return;
  }

  let fields;
  try {
    const type = (env.CONTENT_TYPE ?? '').toLowerCase();
    if (type.startsWith('application/x-www-form-urlencoded')) fields = parseUrlencoded(cgi.body);
    else if (type.startsWith('multipart/form-data')) fields = parseMultipart(cgi.body, env.CONTENT_TYPE);
    else {
      page(stdout, '415 Unsupported Media Type', 'Not a form', 'FormMail accepts HTML form submissions only.');
      return;
    }
    if (fields.length > MAX_FIELDS) throw new BadForm('too many fields');
  } catch (err) {
    if (!(err instanceof BadForm)) throw err;
    page(stdout, '400 Bad Request', 'Form not understood', `${err.message}; nothing was sent.`);
    return;
  }

  const get = (name) => fields.find(([k]) => k === name)?.[1];
  const trap = get(site.honeypot);
  if (trap !== undefined && trap !== '') {
    // A robot filled the field people cannot see: it gets the same page as a person, and nothing is sent.
    page(stdout, '200 OK', 'Thank you', 'Your message has been sent.');
    return;
  }

  const subject = get('subject') || `Form submission on ${env.SERVER_NAME}`;
  const email = get('email');
  const recipient = get('recipient');
  for (const [label, value] of [['subject', subject], ['email', email], ['recipient', recipient]]) {
    if (value !== undefined && LINE_BREAK.test(value)) {
      page(stdout, '400 Bad Request', 'Form refused', `The ${label} field contains a line break; nothing was sent.`);
      return;
    }
  }

  const lines = [`Form submitted on ${env.SERVER_NAME} from ${env.REMOTE_ADDR}.`, ''];
  for (const [name, value] of fields) {
    if (CONTROL_FIELDS.has(name) || name === site.honeypot) continue;
    lines.push(`${name}: ${indent(value)}`);
  }
  const answer = await cgi.mail({
    ...(recipient ? { to: recipient } : {}),
    subject,
    ...(email && ADDRESS.test(email) ? { replyTo: email } : {}),
    text: `${lines.join('\n')}\n`,
  });

  if (!answer.ok) {
    const [status, title] =
      answer.code === 'rate'
        ? ['429 Too Many Requests', 'Please wait']
        : answer.code === 'unavailable' || answer.code === 'failed'
          ? ['503 Service Unavailable', 'Not sent']
          : ['400 Bad Request', 'Form refused'];
    page(stdout, status, title, `${answer.message.charAt(0).toUpperCase()}${answer.message.slice(1)}; nothing was sent.`, status.startsWith('429') ? 'Retry-After: 3600\r\n' : '');
    return;
  }

  const redirect = get('redirect');
  const target = redirect ? sameSite(redirect, env, site) : undefined;
  if (target) {
    stdout.write(`Status: 303 See Other\r\nLocation: ${target}\r\n\r\n`);
    return;
  }
  page(stdout, '200 OK', 'Thank you', 'Your message has been sent.');
}
