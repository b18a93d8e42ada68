import { STATUS_CODES } from 'node:http';

const EXPLAIN: Record<number, string> = {
  400: 'The request could not be understood.',
  403: 'You do not have permission to see this.',
  404: 'Nothing is published at this address.',
  405: 'This address does not accept that method.',
  408: 'The request took too long to arrive.',
  412: 'A precondition of the request did not hold.',
  413: 'The request is too large.',
  416: 'The requested range is outside the file.',
  421: 'This server does not host the site you asked for.',
  431: 'The request headers are too large.',
  500: 'Something went wrong on our side.',
  501: 'This server does not support that method.',
  502: "The site's application is not answering right now.",
  503: 'This site is not available right now.',
  504: "The site's application took too long to answer.",
  505: 'This server does not support that HTTP version.',
};

const cache = new Map<string, Buffer>();

/** The suite's page: `title`, then a heading and the paragraphs (HTML) under it. */
function render(title: string, heading: string, paragraphs: string): Buffer {
  return Buffer.from(
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${title}</title>` +
      `<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#333}h1{font-size:1.4em}small{color:#888}</style></head>` +
      `<body><h1>${heading}</h1>${paragraphs}<hr><small>makewaves</small></body></html>\n`,
  );
}

/** The suite's own small HTML page for an error status. `ref` ties the page to a log line. */
export function errorPage(status: number, ref?: string): Buffer {
  const key = ref ? '' : String(status);
  const hit = key ? cache.get(key) : undefined;
  if (hit) return hit;
  const title = `${status} ${STATUS_CODES[status] ?? 'Error'}`;
  const body = render(title, title, `<p>${EXPLAIN[status] ?? ''}</p>` + (ref ? `<p><small>Reference: ${ref}</small></p>` : ''));
  if (key) cache.set(key, body);
  return body;
}

let suspended: Buffer | undefined;

/**
 * The page every path of a suspended tenant answers with (503). It names
 * no reason: that is between the operator and the tenant.
 */
export function suspendedPage(): Buffer {
  suspended ??= render(
    'Site suspended',
    'This site is suspended',
    '<p>The site at this address has been suspended by its hosting provider and is not available right now.</p>' +
      '<p>If it is your site, please contact your hosting provider.</p>',
  );
  return suspended;
}

let busy: Buffer | undefined;

/** The 503 page of a connection over its client's connection cap (admission.ts). */
export function busyPage(): Buffer {
  const title = `503 ${STATUS_CODES[503]}`;
  busy ??= render(title, title, '<p>Too many connections from your address; please try again in a few seconds.</p>');
  return busy;
}
