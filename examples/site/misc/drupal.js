// Demo script for the File Conveyor example site.
var Drupal = Drupal || { settings: {}, behaviors: {} };

(function ($) {
  /**
   * Attach all registered behaviors to a page element.
   */
  Drupal.attachBehaviors = function (context) {
    context = context || document;
    for (var name in Drupal.behaviors) {
      if (typeof Drupal.behaviors[name] === 'function') {
        Drupal.behaviors[name](context);
      }
    }
  };
})(jQuery);
