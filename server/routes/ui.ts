/**
 * The browser UI at `/` (index.html) and `/ui/app.js`, `/ui/app.css`. Mounted before the API's
 * authentication: the page holds no data, and it asks for the `--api-auth` credentials itself, then sends
 * them with every API call and on the socket.io handshake.
 */
import express, { type Router } from 'express';
import { uiFiles } from '../../plugin/ui/build.ts';

export function uiRouter(log: (msg: string) => void): Router {
  const router = express.Router();
  const send = (name: string): express.RequestHandler => async (_req, res, next) => {
    let files;
    try {
      files = await uiFiles();
    } catch (e) {
      log(`error: the browser UI could not be built: ${(e as Error).message}`);
      res.status(500).type('text/plain').send(`The browser UI could not be built: ${(e as Error).message}`);
      return;
    }
    const f = files.get(name);
    if (!f) return next();
    res.setHeader('Content-Type', f.type);
    // The bundle changes with the server, so the browser revalidates instead of keeping an old copy.
    res.setHeader('Cache-Control', 'no-cache');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.send(f.body);
  };
  router.get(['/', '/index.html'], send('index.html'));
  router.get('/ui/app.js', send('ui/app.js'));
  router.get('/ui/app.css', send('ui/app.css'));
  return router;
}
