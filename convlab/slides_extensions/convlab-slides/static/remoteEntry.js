/*
 * ConvLab's fix-up of jupyterlab-rise's slides page, in the shape of a JupyterLab federated extension: the page
 * loads this script and calls init() with its shared modules. Plain JavaScript, no build step. convlab/slides.py
 * serves this folder to the slides page only (RiseApp.labextensions_path); JupyterLab itself never loads it.
 *
 * jupyterlab-rise 0.43.1 bundles @jupyter/web-components 0.16.7, whose <jp-toolbar> derives its fill colour from
 * its parent's when it connects (Toolbar.connectedCallback: fillColor.setValueFor(this, a function of the parent's
 * fillColor)). When the page attaches the notebook panel with its (hidden) toolbar, that derivation creates the
 * panel's design-token node, which adopts the toolbar's node and notifies it, which derives again, and so on:
 * "RangeError: Maximum call stack size exceeded", 7 to 38 times per page load. @jupyter/web-components 0.17.1
 * dropped the derivation (its toolbar keeps its parent's colour). The browser took connectedCallback when the
 * element was defined, before this script runs, so the fix-up is on the token instead: in copies older than
 * 0.17.1, fillColor ignores a derived value set for a <jp-toolbar>, and the toolbar keeps its parent's colour, as
 * in 0.17.1. Every other use of fillColor is unchanged; copies from 0.17.1 on are left alone.
 */
(function () {
  'use strict';
  const FIXED = [0, 17, 1];

  function olderThanFixed(version) {
    const parts = String(version).split(/[.+-]/).slice(0, 3).map(Number);
    for (let i = 0; i < 3; i++) {
      if (parts[i] !== FIXED[i]) return parts[i] < FIXED[i];
    }
    return false;
  }

  async function init(shareScope) {
    const copies = (shareScope && shareScope['@jupyter/web-components']) || {};
    for (const [version, entry] of Object.entries(copies)) {
      if (!olderThanFixed(version)) continue;
      const { fillColor, Toolbar } = (await entry.get())();
      if (!fillColor || !Toolbar || Object.prototype.hasOwnProperty.call(fillColor, 'setValueFor')) continue;
      const setValueFor = fillColor.setValueFor;
      fillColor.setValueFor = function (element, value) {
        if (element instanceof Toolbar && typeof value === 'function') return;
        return setValueFor.call(this, element, value);
      };
    }
  }

  function get(module) {
    return Promise.reject(new Error(`convlab-slides: expected no module request (it only has init), got ${module}`));
  }

  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB['convlab-slides'] = { init, get };
})();
