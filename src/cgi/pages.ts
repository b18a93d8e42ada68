import { STATUS_CODES } from 'node:http';

const WHY: Record<number, string> = {
  404: 'There is no form handler of that name on this site.',
  413: 'The form sent more data than this site accepts.',
  500: "The site's form handler failed.",
  502: "The site's form handler gave an answer that could not be used.",
  503: 'Too many forms are being handled right now; please try again in a moment.',
  504: "The site's form handler took too long to answer.",
};

/** The small HTML page the gateway answers with when a handler cannot. `ref` ties it to a log line. */
export function handlerErrorPage(status: number, ref?: string, detail?: string): Buffer {
  const title = `${status} ${STATUS_CODES[status] ?? 'Error'}`;
  return Buffer.from(
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${title}</title></head>` +
      `<body style="font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em">` +
      `<h1>${title}</h1><p>${detail ?? WHY[status] ?? ''}</p>` +
      (ref ? `<p><small>Reference: ${ref}</small></p>` : '') +
      `</body></html>\n`,
  );
}
